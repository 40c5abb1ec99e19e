#!/usr/bin/env python3
"""Makes Tests/Fixtures/reference/models/grad-minilm-dora: the grad-minilm-seqcls fixture's batch through a
PEFT DoRA adapter (random A, B and magnitude; dropout off) on all-MiniLM-L6-v2 for sequence
classification — the adapter, the loss and d loss / d every adapter tensor, named as in the adapter file.
Same layout as the shared grad-* fixtures.

  make-dora-grad-reference.py MINILM_FOLDER FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, os, shutil, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification
from peft import LoraConfig, get_peft_model

model_dir, root = sys.argv[1:3]
src = os.path.join(root, "models", "grad-minilm-seqcls")
out = os.path.join(root, "models", "grad-minilm-dora")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
batch = json.load(open(os.path.join(src, "batch.json")))
m = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS", lora_dropout=0.0,
                 use_dora=True, init_lora_weights=False)
m = get_peft_model(m, cfg)
with torch.no_grad():
    for n, p in m.named_parameters():
        if "lora_magnitude_vector" in n:
            p.mul_(1 + 0.1 * torch.randn_like(p))  # move m off ‖W + s·B·A‖ so its gradient matters
m.eval()  # dropout off
ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
loss.backward()
m.save_pretrained(out)
from safetensors import safe_open
names = list(safe_open(os.path.join(out, "adapter_model.safetensors"), "pt").keys())
grads = {}
params = {n: p for n, p in m.named_parameters() if p.requires_grad}
for saved in names:
    # PEFT's saved name drops the adapter name ("default") that the live parameter carries.
    # (and the magnitude's ".weight": live `…lora_magnitude_vector.default.weight`, saved `…lora_magnitude_vector`).
    hit = [n for n in params if n.replace(".default", "").replace(".modules_to_save", "") in (saved, saved + ".weight")]
    assert len(hit) == 1, (saved, hit)
    grads[saved] = params[hit[0]].grad.detach().clone().contiguous()
save_file(grads, os.path.join(out, "grads.safetensors"))
json.dump({"loss": loss.item()}, open(os.path.join(out, "expected.json"), "w"))
shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
readme = os.path.join(out, "README.md")
if os.path.exists(readme): os.remove(readme)  # PEFT's model-card template
print("wrote", out, "loss", loss.item(), "tensors", len(names))
