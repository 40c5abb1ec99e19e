#!/usr/bin/env python3
"""The PyTorch + HF PEFT side of `graft compare`: trains each adapter method on each text-classification task
with the data and hyperparameters Graft uses, and reports test accuracy, so Graft's table can show PEFT's
accuracy beside its own.

  compare-peft.py MODEL_FOLDER OUT.json --task NAME=FOLDER [--task ...]
                  [--methods lora,dora,adalora,corda,ia3,vera,prompt,prefix,full] [--lr METHOD=LR ...]
                  [--epochs 1] [--threads 2] [--limit N]

MODEL_FOLDER is an HF BERT folder (all-MiniLM-L6-v2). Each task FOLDER holds train/validation/test.jsonl with
{"text", "label"} rows; the labels are the sorted distinct labels of train.jsonl (as Graft sorts them). --limit N
uses only the first N rows of each split (smoke tests; the split files are grouped by
label, so the first rows may all be one class). Every method gets the same recipe (COMMON below): seed 42
before each model, a fresh classifier head (PEFT's SEQ_CLS modules_to_save), dropout as the config says while
training, batch 32 shuffled each epoch by a generator seeded 42, AdamW, linear warmup over ceil(0.1 × steps) then
linear decay to 0, gradient clipping to norm 1, cross-entropy; test accuracy (argmax, batch 64, model.eval()).
The PEFT configs and learning rates are in METHODS. Another learning rate: `--lr lora=5e-3` (repeatable) runs the
listed method lora at 5e-3 instead, stored under the key "lora@5e-3" (the rate written as mantissa e exponent, so
5e-3, 0.005 and 5E-03 name the same run); `--methods lora@5e-3` is the same, and lets one call run
lora,lora@5e-3. A rate equal to the method's own keeps the plain key. In OUT.json's settings the key's METHODS entry
is recorded with its lr replaced. AdaLoRA (Graft's AdaLoRAConfig defaults) runs PEFT's
documented loop: its config's total_step is the run's optimizer steps, and after every optimizer step (before the
gradients are zeroed) model.base_model.update_and_allocate(step) updates the importance scores and the rank budget,
step counting optimizer steps from 0; the loss backpropagated is the output's .loss, which for AdaLoRA includes
orth_reg_weight × the orthogonality regulariser (PEFT adds it only when labels are passed). "full" uses no PEFT:
every nn.Linear of the encoder and the pooler plus the classifier trains; embeddings and LayerNorms stay frozen.

CorDA ("corda": LoRA r=8, alpha 16 on query/value, init_lora_weights="corda", CordaConfig(corda_method="ipm"), as
make-corda-reference.py calls it): after the seeded model load and before get_peft_model, the base model goes
through peft.tuners.lora.corda.preprocess_corda with a run_model that feeds the calibration examples Graft's
CorDA reads — `graft compare` runs `graft train --method corda` without --calibration-examples, so CorDAConfig's
default 256, and TrainingRun feeds `train.prefix(256)`: the FIRST 256 rows of train.jsonl in file order (the
given train file is not shuffled: Split.indices returns sorted indices; fewer rows with --limit), each its own
forward pass (batch of one, no padding, attention mask all ones, dropout off: preprocess_corda sets eval()),
tokenised as for training (special tokens, truncated to max_length 128 keeping [SEP]). The split files are
grouped by label, so for sentiment and topic these 256 rows are all one class — as in Graft. PEFT's hook
computes C = mean over the forwards of XᵀX / max(X)², then the decomposition in float32 (Graft: float64). The
calibration and decomposition happen while building, outside train_seconds. corda.py does `from attr import
dataclass` (the attrs package, absent from the peer venv): as in make-corda-reference.py a stand-in `attr` module
with the stdlib dataclass is registered when attrs is missing.

OUT.json = {"settings": {...}, "results": {KEY: {TASK: {"test_accuracy", "trainable_parameters",
"train_seconds", "examples": {"train", "test"}}}}}, KEY the method or METHOD@LR, rewritten after every (key, task)
run; when OUT.json exists with the same settings, the pairs it already holds are skipped (a long run can be
resumed). Tasks, methods and learning rates may be added between runs; a task's folder or a key's entry in
settings.methods (METHODS, with its lr for METHOD@LR) that differs from OUT.json's is refused.

Prefix tuning: PEFT 0.21.2 looks for `past_key_values` in BertModel.forward's signature, which transformers 5.24
renamed `cache` (the old name still works); as in peft-roundtrip.py, the name is added to the signature PEFT
inspects (this process only). Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import argparse, copy, inspect, json, math, os, sys, time
import torch
import peft
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peft_compat import let_peft_see_bert_cache
from transformers.utils import logging as hf_logging
try:
    import attr  # noqa: F401 — peft/tuners/lora/corda.py does `from attr import dataclass` (the attrs package),
except ImportError:  # which PEFT does not declare and the peer venv lacks; CordaEigens is a plain 3-field
    import dataclasses, types  # record, so the stdlib dataclass is an exact stand-in (make-corda-reference.py).
    sys.modules["attr"] = types.SimpleNamespace(dataclass=dataclasses.dataclass)
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda

COMMON = dict(seed=42, batch=32, eval_batch=64, max_length=128, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
              warmup_ratio=0.1, max_grad_norm=1.0, schedule="linear warmup from 0, linear decay to 0 at the last step")
QV = ["query", "value"]
METHODS = {  # PEFT config class and arguments (task_type="SEQ_CLS" added), learning rate
    "lora": dict(lr=1e-3, config="LoraConfig", args=dict(r=8, lora_alpha=16, target_modules=QV, lora_dropout=0.0)),
    "dora": dict(lr=1e-3, config="LoraConfig", args=dict(r=8, lora_alpha=16, target_modules=QV, lora_dropout=0.0, use_dora=True)),
    # init from the weights' components against the input covariance of the calibration rows (see build, calibrate)
    "corda": dict(lr=1e-3, config="LoraConfig", calibration=dict(examples=256, rows="the first rows of train.jsonl in file order",
                                                                 forward="each alone: unpadded, truncated to max_length, eval()"),
                  args=dict(r=8, lora_alpha=16, target_modules=QV, lora_dropout=0.0, init_lora_weights="corda",
                            corda_config=dict(corda_method="ipm"))),
    # total_step: set to the run's optimizer steps; the loop then calls update_and_allocate (see run)
    "adalora": dict(lr=2e-2, config="AdaLoraConfig", total_step="the run's optimizer steps",
                    args=dict(init_r=12, target_r=8, lora_alpha=8, target_modules=QV, lora_dropout=0.0, tinit=0, tfinal=0,
                              deltaT=1, beta1=0.85, beta2=0.85, orth_reg_weight=0.5)),
    "ia3": dict(lr=1e-2, config="IA3Config", args=dict(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])),
    "vera": dict(lr=1e-2, config="VeraConfig", args=dict(r=256, target_modules=QV, vera_dropout=0.0)),
    "prompt": dict(lr=3e-2, config="PromptTuningConfig", args=dict(num_virtual_tokens=20, prompt_tuning_init="RANDOM")),
    "prefix": dict(lr=1e-2, config="PrefixTuningConfig", args=dict(num_virtual_tokens=20, prefix_projection=False)),
    "full": dict(lr=5e-5, config=None, args=dict(trainable="every nn.Linear of the encoder and pooler (weight, bias) + classifier")),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("model"); ap.add_argument("out")
ap.add_argument("--task", action="append", required=True, metavar="NAME=FOLDER")
ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated METHOD or METHOD@LR")
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

let_peft_see_bert_cache()  # prefix tuning on BERT (peft_compat.py)

settings = json.loads(json.dumps(dict(COMMON, model=os.path.abspath(a.model), epochs=a.epochs, threads=a.threads,
                                      limit=a.limit, methods=dict(METHODS, **runs), tasks={n: os.path.abspath(d) for n, d in tasks.items()})))
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


def calibrate(m, rows):
    """preprocess_corda's run_model: each row its own forward (batch of one, unpadded), as Graft's calibration."""
    def run_model():
        for r in rows:
            m(**tok(r["text"], truncation=True, max_length=COMMON["max_length"], return_tensors="pt"))
    return run_model


def build(spec, k, steps, train):
    torch.manual_seed(COMMON["seed"])
    m = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=k)
    if spec["config"] is None:  # full fine-tuning
        for p in m.parameters(): p.requires_grad = False
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and (".encoder." in f".{name}." or ".pooler." in f".{name}." or name == "classifier"):
                for p in mod.parameters(): p.requires_grad = True
        return m
    args = copy.deepcopy(spec["args"])
    if "total_step" in spec: args["total_step"] = steps  # AdaLoRA's budget schedule spans the whole run
    if "corda_config" in args: args["corda_config"] = CordaConfig(**args["corda_config"])
    config = getattr(peft, spec["config"])(task_type="SEQ_CLS", **args)
    if "calibration" in spec:  # CorDA: covariances of the targets' inputs → eigens on the modules (eval mode)
        preprocess_corda(m, config, run_model=calibrate(m, train[:spec["calibration"]["examples"]]))
    return peft.get_peft_model(m, config)


def run(spec, folder):
    labels = sorted({r["label"] for r in read(folder, "train")})
    train, test = read(folder, "train", a.limit), read(folder, "test", a.limit)
    steps = a.epochs * math.ceil(len(train) / COMMON["batch"])  # optimizer steps of the run
    m = build(spec, len(labels), steps, train)
    params = [p for p in m.parameters() if p.requires_grad]
    allocate = "total_step" in spec  # AdaLoRA: PEFT's rank allocation after every optimizer step
    opt = torch.optim.AdamW(params, lr=spec["lr"], betas=tuple(COMMON["betas"]), eps=COMMON["eps"],
                            weight_decay=COMMON["weight_decay"])
    sched = get_linear_schedule_with_warmup(opt, math.ceil(COMMON["warmup_ratio"] * steps), steps)
    gen = torch.Generator().manual_seed(COMMON["seed"])
    t0 = time.time()
    m.train()
    step = 0  # optimizer steps done, from 0
    for _ in range(a.epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for i in range(0, len(train), COMMON["batch"]):
            enc, y = encode([train[j] for j in order[i:i + COMMON["batch"]]], labels)
            m(**enc, labels=y).loss.backward()  # .loss: for AdaLoRA the task loss + orth_reg_weight × regulariser
            torch.nn.utils.clip_grad_norm_(params, COMMON["max_grad_norm"])
            opt.step()
            if allocate: m.base_model.update_and_allocate(step)  # reads the gradients: before zero_grad
            sched.step(); opt.zero_grad(); step += 1
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
        print(f"{method:9} {name:16} accuracy {r['test_accuracy']:.4f}  trainable {r['trainable_parameters']:>9,}  "
              f"{r['train_seconds']:.1f} s{note}", flush=True)

w, mw = max(12, *(len(n) + 2 for n in tasks)), max(8, *(len(m) + 1 for m in methods))
print("\n" + "method".ljust(mw) + "".join(n.rjust(w) for n in tasks))
for method in methods:
    print(method.ljust(mw) + "".join(f"{out['results'][method][n]['test_accuracy']:.4f}".rjust(w) for n in tasks))
