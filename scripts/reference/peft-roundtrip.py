#!/usr/bin/env python3
"""Loads an adapter folder written by `graft train` with HF PEFT and prints the model's outputs, to
compare with Graft's on the same inputs (the PEFT round trip of the training issue).

  seq-cls:   peft-roundtrip.py seq-cls MODEL_FOLDER ADAPTER DATA.jsonl   -> one JSON line of logits per row
  causal-lm: peft-roundtrip.py causal-lm MODEL.gguf ADAPTER "text"       -> last-position logits as JSON

Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, os, sys
import torch
from peft import PeftModel

kind, model, adapter, data = sys.argv[1:5]
torch.set_num_threads(2)
if kind == "seq-cls":
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peft_compat import let_peft_see_bert_cache
    let_peft_see_bert_cache()  # prefix tuning on BERT under transformers 5.24
    labels = json.load(open(os.path.join(adapter, "labels.json")))["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
    m = PeftModel.from_pretrained(base, adapter).eval()
    tok = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(l) for l in open(data) if l.strip()]
    with torch.no_grad():
        for r in rows:
            out = m(**tok(r["text"], return_tensors="pt", truncation=True)).logits[0]
            print(json.dumps({"logits": out.tolist()}))
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.split(model)
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ids = tok(data, return_tensors="pt", add_special_tokens=False).input_ids
        print(json.dumps({"ids": ids[0].tolist(), "logits": m(ids).logits[0, -1].tolist()}))
