#!/usr/bin/env python3
"""Makes two backward-pass fixtures under Tests/Fixtures/reference/models/, in the layout of the shared grad-*
fixtures (adapter from save_pretrained, batch.json, expected.json with the loss, and grads.safetensors with
d loss / d every saved adapter tensor that takes a gradient, named as in the adapter file). Dropout off
(vera_dropout=0, model.eval()).

  grad-minilm-vera:  the grad-minilm-seqcls batch through a PEFT VeRA adapter (r=16) on all-MiniLM-L6-v2 for
                     sequence classification (3 labels) on query, value and output.dense — a plain suffix match,
                     so both attention.output.dense [384→384] and the FFN output.dense [1536→384]. The shared
                     projections are sized by the widest layer (vera_A [16, 1536], vera_B [384, 16]); narrower
                     layers use the leading columns of vera_A / leading rows of vera_B. The classifier is saved
                     as modules_to_save. expected.json also holds the logits.
  grad-smollm2-vera: the grad-smollm2-lora batch through VeRA (r=16) on SmolLM2 q_proj [576→576] and v_proj
                     [576→192] (vera_B [576, 16]; v_proj uses its first 192 rows); causal-LM loss with labels
                     as stored (-100 = ignored).

save_projection=True, so the frozen projections vera_A / vera_B are in adapter_model.safetensors; they are
buffers and have no gradient, so grads.safetensors holds only the λ vectors (and the classifier). PEFT inits
λ_b to zeros (which would make d loss / d λ_d zero), so every λ_b is set to 0.1·N(0,1) and every λ_d is
multiplied by (1 + 0.1·N(0,1)). Each fixture is reloaded with PeftModel.from_pretrained and its loss recomputed.

  make-vera-grad-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, os, shutil, sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from peft import PeftModel, VeraConfig, get_peft_model

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")


def perturb_vera(m):
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "vera_lambda_b" in n:
                p.copy_(0.1 * torch.randn_like(p))  # off the init of zeros
            elif "vera_lambda_d" in n:
                p.mul_(1 + 0.1 * torch.randn_like(p))


def finish(m, loss, src, out, expected):
    """Save the adapter, the gradients under the saved names, expected.json and the batch."""
    m.save_pretrained(out)
    names = list(safe_open(os.path.join(out, "adapter_model.safetensors"), "pt").keys())
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    grads, used, frozen = {}, set(), []
    for saved in names:
        # PEFT's saved name drops the adapter name ("default") that the live parameter carries
        # (live `…query.vera_lambda_b.default`, saved `…query.vera_lambda_b`; live
        # `…classifier.modules_to_save.default.weight`, saved `…classifier.weight`).
        hit = [n for n in params if n.replace(".default", "").replace(".modules_to_save", "") in (saved, saved + ".weight")]
        if not hit:  # the shared projections: buffers, no gradient
            assert saved.startswith("base_model.vera_"), saved
            frozen.append(saved)
            continue
        assert len(hit) == 1, (saved, hit)
        assert params[hit[0]].grad is not None, saved
        grads[saved] = params[hit[0]].grad.detach().clone().contiguous()
        used.add(hit[0])
    assert used == set(params), sorted(set(params) - used)  # every trainable tensor is in the adapter file
    assert len(frozen) == 2, frozen  # vera_A and vera_B
    save_file(grads, os.path.join(out, "grads.safetensors"))
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme): os.remove(readme)  # PEFT's model-card template
    for f in os.listdir(out): os.chmod(os.path.join(out, f), 0o644)
    print("wrote", out, "loss", loss.item(), "tensors", len(names), "grads", len(grads), "frozen", frozen)
    return names


def run(m, batch):
    ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
    return m(input_ids=ids, attention_mask=mask, labels=labels)


def check_reload(base, out, batch, loss):
    m = PeftModel.from_pretrained(base, out)
    m.eval()
    with torch.no_grad():
        again = run(m, batch).loss.item()
    print("reloaded", out, "loss", again)
    assert abs(again - loss) <= 1e-6 * max(1.0, abs(loss)), (again, loss)


def load_smollm2():
    d, f = os.path.split(smollm2_gguf)
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)


# 1. VeRA on MiniLM, sequence classification.
src = os.path.join(models, "grad-minilm-seqcls")
out = os.path.join(models, "grad-minilm-vera")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
batch = json.load(open(os.path.join(src, "batch.json")))
m = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)
m = get_peft_model(m, VeraConfig(r=16, target_modules=["query", "value", "output.dense"], task_type="SEQ_CLS",
                                 vera_dropout=0.0, save_projection=True, projection_prng_key=0))
perturb_vera(m)
m.eval()  # dropout off
res = run(m, batch)
res.loss.backward()
finish(m, res.loss, src, out, {"loss": res.loss.item(), "logits": res.logits.detach().tolist()})
del m
check_reload(AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3), out, batch, res.loss.item())

# 2. VeRA on SmolLM2, causal LM.
src = os.path.join(models, "grad-smollm2-lora")
out = os.path.join(models, "grad-smollm2-vera")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
batch = json.load(open(os.path.join(src, "batch.json")))
m = get_peft_model(load_smollm2(), VeraConfig(r=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                               save_projection=True, projection_prng_key=0))
perturb_vera(m)
m.eval()
loss = run(m, batch).loss  # mean over non--100 labels after the shift
loss.backward()
finish(m, loss, src, out, {"loss": loss.item()})
del m
check_reload(load_smollm2(), out, batch, loss.item())
