#!/usr/bin/env python3
"""Makes Tests/Fixtures/reference/models/fuse-minilm-ia3: the weights and biases of every module the
grad-minilm-ia3 adapter targets, and the classifier, after PEFT merge_and_unload of that (IA)³ adapter on
all-MiniLM-L6-v2 (AutoModelForSequenceClassification, 3 labels). Same layout as fuse-minilm: expected.json and
fused_subset.safetensors, tensors named as in the merged transformers BertForSequenceClassification
(`bert.encoder.layer.N.…`, `classifier.weight`).

(IA)³ merge: key/value scale their outputs, so weight rows and the bias are scaled; output.dense (both
attention.output.dense and the FFN output.dense — PEFT's feedforward match is a suffix match) scales its input,
so weight columns are scaled and the bias is unchanged. Every targeted bias is kept, changed or not.

As in fuse-minilm, each adapted matrix keeps only its first ROWS rows (the file stays under 1 MB; a test compares
it as a prefix). Biases and the classifier are whole, so every key/value scale is covered through the biases and
every feedforward scale through the kept rows' columns.

  make-ia3-fuse-reference.py MINILM_FOLDER FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, os, sys
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification
from peft import PeftModel
from peft.tuners.ia3.layer import IA3Layer

ROWS = 12

model_dir, root = sys.argv[1:3]
torch.set_num_threads(1)
adapter = os.path.join(root, "models", "grad-minilm-ia3")
out = os.path.join(root, "models", "fuse-minilm-ia3")
os.makedirs(out, exist_ok=True)

base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
orig = {k: v.detach().clone() for k, v in base.state_dict().items()}
pm = PeftModel.from_pretrained(base, adapter)
targets, scales, feedforward = [], {}, {}
for n, mod in pm.named_modules():
    if isinstance(mod, IA3Layer):
        name = n.removeprefix("base_model.model.")  # the merged model's name for the module
        targets.append(name)
        scales[name] = mod.ia3_l["default"].detach().clone()
        feedforward[name] = mod.is_feedforward
merged = pm.merge_and_unload()
sd = merged.state_dict()

subset = {}
for t in targets:
    subset[t + ".weight"] = sd[t + ".weight"][:ROWS].clone().contiguous()
    subset[t + ".bias"] = sd[t + ".bias"].clone().contiguous()
subset["classifier.weight"] = sd["classifier.weight"].clone().contiguous()
subset["classifier.bias"] = sd["classifier.bias"].clone().contiguous()
path = os.path.join(out, "fused_subset.safetensors")
save_file(subset, path, metadata={"format": "pt"})
json.dump({"adapter": "../grad-minilm-ia3",
           "what": "weights and biases of the (IA)³-targeted modules and the classifier after PEFT merge_and_unload, "
                   "named as in a transformers BertForSequenceClassification; each adapted matrix keeps its first "
                   f"{ROWS} rows, biases and the classifier are whole; key/value biases are scaled, output.dense "
                   "(attention and FFN, both feedforward) biases are unchanged"},
          open(os.path.join(out, "expected.json"), "w"), indent=1)

# Verify: the file reloads equal to the merged model, and the merge is what (IA)³ says it is.
back = load_file(path)
assert set(back) == set(subset)
for k, v in back.items():
    ref = sd[k][:ROWS] if k.endswith(".weight") and not k.startswith("classifier") else sd[k]
    assert torch.equal(v, ref), k
for t in targets:
    l = scales[t]
    if feedforward[t]:  # ia3_l is (1, in): columns scaled, bias unchanged
        assert torch.allclose(sd[t + ".weight"], orig[t + ".weight"] * l, atol=0, rtol=0), t
        assert torch.equal(sd[t + ".bias"], orig[t + ".bias"]), t
    else:  # ia3_l is (out, 1): rows and bias scaled
        assert torch.allclose(sd[t + ".weight"], orig[t + ".weight"] * l, atol=0, rtol=0), t
        assert torch.allclose(sd[t + ".bias"], orig[t + ".bias"] * l.flatten(), atol=0, rtol=0), t
        assert not torch.equal(sd[t + ".bias"], orig[t + ".bias"]), t
saved = safe_open(os.path.join(adapter, "adapter_model.safetensors"), "pt")
for k in ("classifier.weight", "classifier.bias"):
    src = [n for n in saved.keys() if n.endswith(k)]
    assert len(src) == 1 and torch.equal(saved.get_tensor(src[0]), sd[k]), k
assert len(targets) == 6 * 4, targets
print("wrote", out, "tensors", len(subset), "bytes", os.path.getsize(path),
      "feedforward", sum(feedforward.values()), "of", len(targets))
