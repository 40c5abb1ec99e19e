#!/usr/bin/env python3
"""Makes two backward-pass fixtures under Tests/Fixtures/reference/models/ for plain full fine-tuning (no PEFT):
every parameter frozen except a chosen few, which keep requires_grad. Layout of the shared grad-* fixtures minus
the adapter: batch.json, expected.json with the loss and the trainable names, and grads.safetensors with
d loss / d every trainable tensor, named as in the model's state dict (float32, contiguous). Dropout off
(model.eval()).

  grad-minilm-full:  the grad-minilm-seqcls batch through all-MiniLM-L6-v2 for sequence classification
                     (3 labels, torch.manual_seed(0) before building, so the classifier head is that seed's
                     random init); trainable: layer 0 query, layer 5 value (weight and bias each) and the
                     classifier. head.safetensors holds the classifier's initial weight and bias so the Swift
                     side can use the same random head. expected.json also holds the logits.
  grad-smollm2-full: the grad-smollm2-lora batch through SmolLM2 as a causal LM (labels as stored,
                     -100 = ignored); trainable: layer 29 q_proj and v_proj, layer 28 k_proj (weights only,
                     the projections have no bias).

Last, a check: the saved gradient of bert.encoder.layer.0.attention.self.query.weight against a central finite
difference (float64 copy of the model) on its three largest-magnitude entries.

  make-full-grad-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import copy, json, os, shutil, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")

MINILM_TRAINABLE = [
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.0.attention.self.query.bias",
    "bert.encoder.layer.5.attention.self.value.weight",
    "bert.encoder.layer.5.attention.self.value.bias",
    "classifier.weight",
    "classifier.bias",
]
SMOLLM2_TRAINABLE = [
    "model.layers.29.self_attn.q_proj.weight",
    "model.layers.29.self_attn.v_proj.weight",
    "model.layers.28.self_attn.k_proj.weight",
]


def freeze_except(m, trainable):
    """requires_grad only on `trainable` (state-dict names, which are the parameter names here)."""
    params = dict(m.named_parameters())
    state = m.state_dict()
    for n in trainable:
        assert n in params and n in state, n
    for n, p in params.items():
        p.requires_grad_(n in trainable)
    return params


def batch_tensors(batch):
    return torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"]), torch.tensor(batch["labels"])


def finish(params, trainable, loss, src, out, expected):
    """Save the gradients under the state-dict names, expected.json and the batch; print the norms and size."""
    grads = {}
    for n in trainable:
        assert params[n].grad is not None, n
        grads[n] = params[n].grad.detach().to(torch.float32).clone().contiguous()
    frozen = [n for n, p in params.items() if n not in trainable and p.grad is not None]
    assert not frozen, frozen  # nothing else picked up a gradient
    save_file(grads, os.path.join(out, "grads.safetensors"))
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    print("wrote", out, "loss", loss.item())
    for n in trainable:
        print(f"  |grad| {n} {tuple(grads[n].shape)}: {grads[n].norm().item():.8g}")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"  folder size: {size} bytes ({size / 1024:.1f} KiB)")
    return grads


# 1. MiniLM, sequence classification.
src = os.path.join(models, "grad-minilm-seqcls")
out = os.path.join(models, "grad-minilm-full")
os.makedirs(out, exist_ok=True)
batch = json.load(open(os.path.join(src, "batch.json")))
torch.manual_seed(0)
m = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)
m.eval()  # dropout off
params = freeze_except(m, MINILM_TRAINABLE)
save_file({n: params[n].detach().clone().contiguous() for n in ("classifier.weight", "classifier.bias")},
          os.path.join(out, "head.safetensors"))  # the initial (seed-0 random) head
ids, mask, labels = batch_tensors(batch)
res = m(input_ids=ids, attention_mask=mask, labels=labels)  # cross-entropy, mean over the batch
res.loss.backward()
grads = finish(params, MINILM_TRAINABLE, res.loss, src, out,
               {"loss": res.loss.item(), "logits": res.logits.detach().tolist(), "trainable": MINILM_TRAINABLE})

# 2. SmolLM2, causal LM.
src = os.path.join(models, "grad-smollm2-lora")
out = os.path.join(models, "grad-smollm2-full")
os.makedirs(out, exist_ok=True)
batch2 = json.load(open(os.path.join(src, "batch.json")))
torch.manual_seed(0)
d, f = os.path.split(smollm2_gguf)
m2 = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
m2.eval()
params2 = freeze_except(m2, SMOLLM2_TRAINABLE)
ids2, mask2, labels2 = batch_tensors(batch2)
loss2 = m2(input_ids=ids2, attention_mask=mask2, labels=labels2).loss  # mean over non--100 labels after the shift
loss2.backward()
finish(params2, SMOLLM2_TRAINABLE, loss2, src, out, {"loss": loss2.item(), "trainable": SMOLLM2_TRAINABLE})
del m2, params2

# 3. Check: the saved layer-0 query gradient against a central finite difference, in a float64 copy of the model.
name = "bert.encoder.layer.0.attention.self.query.weight"
g = grads[name]
m64 = copy.deepcopy(m).double()
w = dict(m64.named_parameters())[name]
eps = 1e-5
worst = 0.0
with torch.no_grad():
    for flat in torch.topk(g.abs().flatten(), 3).indices.tolist():
        i, j = divmod(flat, g.shape[1])
        orig = w[i, j].item()
        w[i, j] = orig + eps
        up = m64(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        w[i, j] = orig - eps
        down = m64(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        w[i, j] = orig
        fd = (up - down) / (2 * eps)
        rel = abs(fd - g[i, j].item()) / max(abs(fd), abs(g[i, j].item()))
        worst = max(worst, rel)
        print(f"finite difference {name}[{i}, {j}]: saved {g[i, j].item():.8g}, fd {fd:.8g}, rel diff {rel:.3g}")
assert worst < 1e-3, worst
