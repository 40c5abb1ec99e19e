#!/usr/bin/env python3
"""Makes three backward-pass fixtures under Tests/Fixtures/reference/models/, in the layout of the shared grad-*
fixtures (adapter from save_pretrained, batch.json, expected.json with the loss, and grads.safetensors with
d loss / d every adapter tensor, named as in the adapter file). Dropout off (model.eval()).

  grad-minilm-ia3:        the grad-minilm-seqcls batch through a PEFT (IA)³ adapter on all-MiniLM-L6-v2 for
                          sequence classification (3 labels): key/value scale their outputs, output.dense (both
                          attention.output.dense and the FFN output.dense — PEFT's feedforward match is a plain
                          suffix match) scales its input; the classifier is saved as modules_to_save.
                          expected.json also holds the logits.
  grad-smollm2-ia3:       the grad-smollm2-lora batch through (IA)³ on SmolLM2 (k_proj, v_proj; down_proj as
                          feedforward); causal-LM loss with labels as stored (-100 = ignored).
  grad-minilm-lora-dense: the grad-minilm-seqcls batch through LoRA (r=4, alpha 8, random A and B) on
                          query/key/value/dense — "dense" includes bert.pooler.dense. expected.json also holds
                          the logits.

Every (IA)³ vector is moved off its init of ones (× (1 + 0.1·N(0,1))) so its gradient is not taken at the
identity.

  make-ia3-grad-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, os, shutil, sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from peft import IA3Config, LoraConfig, get_peft_model

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(2)
models = os.path.join(root, "models")


def perturb_ia3(m):
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "ia3_l" in n:
                p.mul_(1 + 0.1 * torch.randn_like(p))  # off the init of ones


def finish(m, loss, src, out, expected):
    """Save the adapter, the gradients under the saved names, expected.json and the batch."""
    m.save_pretrained(out)
    names = list(safe_open(os.path.join(out, "adapter_model.safetensors"), "pt").keys())
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    grads, used = {}, set()
    for saved in names:
        # PEFT's saved name drops the adapter name ("default") that the live parameter carries
        # (live `…key.ia3_l.default`, saved `…key.ia3_l`; live `…classifier.modules_to_save.default.weight`,
        # saved `…classifier.weight`).
        hit = [n for n in params if n.replace(".default", "").replace(".modules_to_save", "") in (saved, saved + ".weight")]
        assert len(hit) == 1, (saved, hit)
        assert params[hit[0]].grad is not None, saved
        grads[saved] = params[hit[0]].grad.detach().clone().contiguous()
        used.add(hit[0])
    assert used == set(params), sorted(set(params) - used)  # every trainable tensor is in the adapter file
    save_file(grads, os.path.join(out, "grads.safetensors"))
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme): os.remove(readme)  # PEFT's model-card template
    print("wrote", out, "loss", loss.item(), "tensors", len(names))
    return names


def minilm_seqcls(cfg, out_name, perturb):
    src = os.path.join(models, "grad-minilm-seqcls")
    out = os.path.join(models, out_name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    batch = json.load(open(os.path.join(src, "batch.json")))
    m = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)
    m = get_peft_model(m, cfg)
    if perturb: perturb_ia3(m)
    m.eval()  # dropout off
    ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
    res = m(input_ids=ids, attention_mask=mask, labels=labels)
    res.loss.backward()
    names = finish(m, res.loss, src, out, {"loss": res.loss.item(), "logits": res.logits.detach().tolist()})
    return m, names


# 1. (IA)³ on MiniLM, sequence classification.
minilm_seqcls(IA3Config(task_type="SEQ_CLS", target_modules=["key", "value", "output.dense"],
                        feedforward_modules=["output.dense"]), "grad-minilm-ia3", perturb=True)

# 2. (IA)³ on SmolLM2, causal LM.
src = os.path.join(models, "grad-smollm2-lora")
out = os.path.join(models, "grad-smollm2-ia3")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
batch = json.load(open(os.path.join(src, "batch.json")))
d, f = os.path.split(smollm2_gguf)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
m = get_peft_model(m, IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                                feedforward_modules=["down_proj"]))
perturb_ia3(m)
m.eval()
ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss  # mean over non--100 labels after the shift
loss.backward()
finish(m, loss, src, out, {"loss": loss.item()})
del m

# 3. LoRA on query/key/value/dense of MiniLM (the pooler's dense included).
m, names = minilm_seqcls(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"],
                                    task_type="SEQ_CLS", lora_dropout=0.0, init_lora_weights=False),
                         "grad-minilm-lora-dense", perturb=False)
pooler = [n for n in names if "bert.pooler.dense.lora_" in n]
assert len(pooler) == 2, pooler
lora_modules = sorted({n.split(".lora_")[0] for n in names if ".lora_" in n})
print("lora modules:", len(lora_modules), "pooler tensors:", pooler)
