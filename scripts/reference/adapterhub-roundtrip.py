#!/usr/bin/env python3
"""Loads a bottleneck-adapter folder written by `graft train --method bottleneck` (sequence classification)
with AdapterHub `adapters` 1.3 and prints the model's logits for each row of DATA.jsonl, to compare with
`graft eval --predictions` on the same rows (the AdapterHub round trip of the adapter-methods issue).
The adapter is read from adapter.safetensors (load_adapter(..., use_safetensors=True)); the classifier
from model_head.safetensors.

  adapterhub-roundtrip.py MODEL_FOLDER ADAPTER DATA.jsonl     -> one JSON line of logits per row

Run with the AdapterHub environment's Python (PEER_ADAPTERHUB=1 ../shared/tools/peer-env.sh)."""
import json, sys, torch, adapters
torch.set_num_threads(2)
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model_dir, ad, data = sys.argv[1:4]
labels = json.load(open(ad + "/labels.json"))["labels"]
m = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
adapters.init(m)
name = m.load_adapter(ad, use_safetensors=True, set_active=True)
# the head: classifier weights from model_head.safetensors
from safetensors.torch import load_file
h = load_file(ad + "/model_head.safetensors")
m.classifier.weight.data.copy_(h["classifier.weight"]); m.classifier.bias.data.copy_(h["classifier.bias"])
m.eval(); tok = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    for l in open(data):
        r = json.loads(l); print(json.dumps({"logits": m(**tok(r["text"], return_tensors="pt")).logits[0].tolist()}))
