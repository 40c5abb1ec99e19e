#!/usr/bin/env python3
"""The PyTorch + AdapterHub side of `graft compare` for the bottleneck adapter: trains it on each
text-classification task with the data and hyperparameters Graft uses, and reports test accuracy, as
compare-peft.py does for the PEFT methods (same recipe, same OUT.json shape).

  compare-adapterhub.py MODEL_FOLDER OUT.json --task NAME=FOLDER [--task ...]
                        [--methods bottleneck,bottleneck-houlsby,bottleneck-parbn] [--lr METHOD=LR ...]
                        [--epochs 1] [--threads 2] [--limit N]

MODEL_FOLDER is an HF BERT folder (all-MiniLM-L6-v2). Each task FOLDER holds train/validation/test.jsonl with
{"text", "label"} rows; the labels are the sorted distinct labels of train.jsonl (as Graft sorts them). --limit N
uses only the first N rows of each split (smoke tests; the split files are grouped by label, so the first rows may
all be one class). The recipe is compare-peft.py's (COMMON below, copied: this runs in another environment):
seed 42 before each model, a fresh classifier head, dropout as the model config says while training, batch 32
shuffled each epoch by a generator seeded 42, AdamW, linear warmup over ceil(0.1 × steps) then linear decay to 0,
gradient clipping to norm 1, cross-entropy; test accuracy (argmax, batch 64, model.eval()).

"bottleneck" is Graft's default (BottleneckConfig: kind seqbn, reduction factor 16, ReLU, AdapterHub's `bert`
init), i.e. AdapterHub's SeqBnConfig(reduction_factor=16) (Pfeiffer: one adapter per layer after the feed-forward
block, 384 → 24 → 384, as make-bottleneck-reference.py builds it), at Graft's compare learning rate 5e-3.
"bottleneck-houlsby" (DoubleSeqBnConfig) and "bottleneck-parbn" (ParBnConfig) are Graft's other kinds
(--bottleneck houlsby / parbn), same factor and rate. What trains is what `graft train --method bottleneck`
trains for classification: the adapters and the classifier head (TrainableAdapter.trainFully(head)); the pooler
stays frozen (Graft's pooler trains only in full fine-tuning). Here: adapters.init(model), add_adapter("task",
config), train_adapter("task") (freezes the base model, pooler included), classifier set trainable explicitly,
set_active_adapters("task"). Another learning rate: `--lr bottleneck=1e-3` or `--methods bottleneck@1e-3`,
stored under "bottleneck@1e-3", as in compare-peft.py.

OUT.json = {"settings": {...}, "results": {KEY: {TASK: {"test_accuracy", "trainable_parameters",
"train_seconds", "examples": {"train", "test"}}}}}, KEY the method or METHOD@LR, rewritten after every (key, task)
run; when OUT.json exists with the same settings, the pairs it already holds are skipped (a long run can be
resumed). Tasks, methods and learning rates may be added between runs; a task's folder or a key's entry in
settings.methods that differs from OUT.json's is refused.
Run with the AdapterHub environment's Python (adapters 1.3.0, transformers 4.57)."""
import argparse, json, logging, math, os, sys, time
import torch
import adapters
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

COMMON = dict(seed=42, batch=32, eval_batch=64, max_length=128, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
              warmup_ratio=0.1, max_grad_norm=1.0, schedule="linear warmup from 0, linear decay to 0 at the last step")
TRAINS = "adapter 'task' (train_adapter) + classifier; base model and pooler frozen"
METHODS = {  # AdapterHub config class and arguments, learning rate
    "bottleneck": dict(lr=5e-3, config="SeqBnConfig", args=dict(reduction_factor=16), trains=TRAINS),
    "bottleneck-houlsby": dict(lr=5e-3, config="DoubleSeqBnConfig", args=dict(reduction_factor=16), trains=TRAINS),
    "bottleneck-parbn": dict(lr=5e-3, config="ParBnConfig", args=dict(reduction_factor=16), trains=TRAINS),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("model"); ap.add_argument("out")
ap.add_argument("--task", action="append", required=True, metavar="NAME=FOLDER")
ap.add_argument("--methods", default="bottleneck", help="comma-separated METHOD or METHOD@LR")
ap.add_argument("--lr", action="append", default=[], metavar="METHOD=LR", help="run METHOD at LR, stored as METHOD@LR")
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--limit", type=int)
a = ap.parse_args()
tasks = dict(t.split("=", 1) for t in a.task)


def lr_text(lr):
    """1e-3, 5e-3, 2.5e-4: the key's spelling of a learning rate (one per value)."""
    m, e = f"{lr:e}".split("e")
    return f"{m.rstrip('0').rstrip('.')}e{int(e)}"


def run_key(name, lr):
    """(key, spec): METHODS[name] at lr, keyed name@lr unless lr is the method's own."""
    assert name in METHODS, f"unknown method {name!r}; known: {list(METHODS)}"
    if lr is None or lr == METHODS[name]["lr"]: return name, METHODS[name]
    assert lr > 0 and math.isfinite(lr), f"learning rate of {name}: {lr}"
    return f"{name}@{lr_text(lr)}", dict(METHODS[name], lr=lr)


overrides = {}
for o in a.lr:
    name, _, v = o.partition("=")
    assert name in METHODS and v, f"--lr {o!r}: give METHOD=LR with METHOD one of {list(METHODS)}"
    overrides[name] = float(v)
runs = {}  # key → METHODS entry (lr as run), in --methods order
for entry in a.methods.split(","):
    name, _, v = entry.partition("@")
    key, spec = run_key(name, float(v) if v else overrides.get(name))
    runs[key] = spec
methods = list(runs)
torch.set_num_threads(a.threads)
hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()  # the per-model load report (fresh classifier)
# adapters' own loggers: train_adapter → set_active_adapters → reset_adapter runs a forward context before the
# adapter is active and warns "There are adapters available but none are activated" (build asserts it is active)
logging.getLogger("adapters").setLevel(logging.ERROR)

settings = json.loads(json.dumps(dict(COMMON, model=os.path.abspath(a.model), epochs=a.epochs, threads=a.threads,
                                      limit=a.limit, methods=dict(METHODS, **runs), adapters=adapters.__version__,
                                      tasks={n: os.path.abspath(d) for n, d in tasks.items()})))
out = {"settings": settings, "results": {}}
if os.path.exists(a.out):
    old = json.load(open(a.out))
    same = ({k: v for k, v in old["settings"].items() if k not in ("tasks", "methods")}
            == {k: v for k, v in settings.items() if k not in ("tasks", "methods")})
    clash = [n for n in tasks if n in old["settings"]["tasks"] and old["settings"]["tasks"][n] != settings["tasks"][n]]
    changed = [m for m, spec in settings["methods"].items()
               if m in old["settings"]["methods"] and old["settings"]["methods"][m] != spec]
    if not same or clash or changed:
        sys.exit(f"{a.out} holds a run with other settings{' (task folders ' + str(clash) + ')' if clash else ''}"
                 f"{' (methods ' + str(changed) + ')' if changed else ''}; move it away or write elsewhere")
    old["settings"]["tasks"].update(settings["tasks"])
    old["settings"]["methods"].update(settings["methods"])
    out = old
tok = AutoTokenizer.from_pretrained(a.model)
tok.padding_side = "right"


def read(folder, split, limit=None):
    rows = [json.loads(l) for l in open(os.path.join(folder, split + ".jsonl")) if l.strip()]
    return rows[:limit] if limit else rows


def encode(rows, labels):
    enc = tok([r["text"] for r in rows], truncation=True, max_length=COMMON["max_length"], padding=True, return_tensors="pt")
    return enc, torch.tensor([labels.index(r["label"]) for r in rows])


def build(spec, k):
    torch.manual_seed(COMMON["seed"])
    m = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=k)
    adapters.init(m)
    m.add_adapter("task", config=getattr(adapters, spec["config"])(**spec["args"]))
    m.train_adapter("task")  # freezes every base-model parameter (the pooler too); the adapter trains
    m.classifier.requires_grad_(True)  # the fresh head trains, as Graft's trainFully(head)
    m.set_active_adapters("task")
    assert str(m.active_adapters) == "Stack[task]", m.active_adapters
    assert not any(p.requires_grad for p in m.bert.pooler.parameters())
    return m


def run(spec, folder):
    labels = sorted({r["label"] for r in read(folder, "train")})
    train, test = read(folder, "train", a.limit), read(folder, "test", a.limit)
    steps = a.epochs * math.ceil(len(train) / COMMON["batch"])  # optimizer steps of the run
    m = build(spec, len(labels))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], betas=tuple(COMMON["betas"]), eps=COMMON["eps"],
                            weight_decay=COMMON["weight_decay"])
    sched = get_linear_schedule_with_warmup(opt, math.ceil(COMMON["warmup_ratio"] * steps), steps)
    gen = torch.Generator().manual_seed(COMMON["seed"])
    t0 = time.time()
    m.train()
    for _ in range(a.epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for i in range(0, len(train), COMMON["batch"]):
            enc, y = encode([train[j] for j in order[i:i + COMMON["batch"]]], labels)
            m(**enc, labels=y).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, COMMON["max_grad_norm"])
            opt.step(); sched.step(); opt.zero_grad()
    seconds = time.time() - t0
    m.eval(); correct = 0
    with torch.no_grad():
        for i in range(0, len(test), COMMON["eval_batch"]):
            enc, y = encode(test[i:i + COMMON["eval_batch"]], labels)
            correct += (m(**enc).logits.argmax(-1) == y).sum().item()
    return dict(test_accuracy=correct / len(test), trainable_parameters=sum(p.numel() for p in params),
                train_seconds=round(seconds, 2), examples=dict(train=len(train), test=len(test)))


for method in methods:
    for name, folder in tasks.items():
        if name in out["results"].get(method, {}):
            r = out["results"][method][name]; note = " (from OUT.json)"
        else:
            r = run(runs[method], folder); note = ""
            out["results"].setdefault(method, {})[name] = r
            tmp = a.out + ".tmp"
            json.dump(out, open(tmp, "w"), indent=1); os.replace(tmp, a.out)
        print(f"{method:18} {name:16} accuracy {r['test_accuracy']:.4f}  trainable {r['trainable_parameters']:>9,}  "
              f"{r['train_seconds']:.1f} s{note}", flush=True)

w, mw = max(12, *(len(n) + 2 for n in tasks)), max(8, *(len(m) + 1 for m in methods))
print("\n" + "method".ljust(mw) + "".join(n.rjust(w) for n in tasks))
for method in methods:
    print(method.ljust(mw) + "".join(f"{out['results'][method][n]['test_accuracy']:.4f}".rjust(w) for n in tasks))
