#!/usr/bin/env python3
"""Reference outputs for Graft's research merge methods (PCB, TSV-M, OPCM), computed with the
authors' or FusionBench's own code on the tiny Llama checkpoints of the merge fixtures.

Not used by the build or the tests; run it to regenerate Tests/Fixtures/reference/research/.
Needs the peer environment (../shared/tools/peer-env.sh) plus `pip install fusion-bench` (0.2.33 was
used), and a checkout of the PCB authors' repository (github.com/duguodong7/pcb-merging), whose
`PCB_merge` is loaded from its pcb-merging.py (that file runs experiment code at module level, so only
its function definitions are executed).

  python scripts/reference/make-research-references.py --pcb-repo /path/to/pcb-merging \
      [--fixtures Tests/Fixtures/reference]
"""
import argparse
import ast
import json
import os
import types

import torch
from safetensors.torch import load_file, save_file

ap = argparse.ArgumentParser()
ap.add_argument("--pcb-repo", required=True)
ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "../../Tests/Fixtures/reference"))
args = ap.parse_args()

root = os.path.abspath(args.fixtures)
models_dir = os.path.join(root, "merge", "models")
out_root = os.path.join(root, "research")
base = load_file(os.path.join(models_dir, "base", "model.safetensors"))
tasks = [load_file(os.path.join(models_dir, f"task{i}", "model.safetensors")) for i in (1, 2, 3)]
names = sorted(base)
tvs = [{k: t[k] - base[k] for k in names} for t in tasks]


def config(method, params):
    """A merge config over the three fixture fine-tunes (paths relative to research/)."""
    body = "".join(f"  {k}: {v}\n" for k, v in params.items())
    return (f"merge_method: {method}\nbase_model: ../merge/models/base\ndtype: float32\nparameters:\n{body}models:\n"
            + "".join(f"- model: ../merge/models/task{i}\n" for i in (1, 2, 3)))


def write(name, config, tensors, source):
    d = os.path.join(out_root, "expected", name)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "SOURCE.md"), "w") as f:
        f.write(source + "\n")
    os.makedirs(os.path.join(out_root, "configs"), exist_ok=True)
    with open(os.path.join(out_root, "configs", f"{name}.yml"), "w") as f:
        f.write(config)


# --- PCB: the authors' PCB_merge, applied per tensor -----------------------------------------
src = open(os.path.join(args.pcb_repo, "pcb-merging.py")).read()
module = ast.parse(src)
defs = ast.Module(body=[n for n in module.body if isinstance(n, ast.FunctionDef)], type_ignores=[])
ns = {"torch": torch}
exec(compile(defs, "pcb-merging.py", "exec"), ns)
pcb_ratio, lam = 0.2, 0.8
merged = {}
for k in names:
    flat = torch.stack([tv[k].reshape(-1) for tv in tvs])
    merged_tv, _, _ = ns["PCB_merge"](flat, pcb_ratio=pcb_ratio)
    merged[k] = base[k] + lam * merged_tv.reshape(base[k].shape)
write("pcb", config("pcb", {"pcb_ratio": pcb_ratio, "lambda": lam}), merged, "PCB_merge from github.com/duguodong7/pcb-merging (pcb-merging.py), applied to each tensor's "
          f"stacked task vectors; theta = base + {lam} * merged_tv.")

# --- TSV-M: FusionBench compute_and_sum_svd_mem_reduction --------------------------------------
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import compute_and_sum_svd_mem_reduction
import fusion_bench
from importlib.metadata import version as pkg_version
alpha = 0.7
new_tv = compute_and_sum_svd_mem_reduction([dict(tv) for tv in tvs], accelerator="cpu")
write("tsv", config("tsv", {"alpha": alpha}), {k: base[k] + alpha * new_tv[k] for k in names},
      f"FusionBench {pkg_version('fusion-bench')} "
      "fusion_bench/method/task_singular_vector/utils/TSVM_utils.py compute_and_sum_svd_mem_reduction; "
      f"theta = base + {alpha} * merged (TaskSingularVectorMerging with scalar alpha).")

# --- OPCM: FusionBench OPCMForCLIP.merge_linear_weights / merge_other_parameters ---------------
import numpy as np

# fusion_bench.method.opcm imports the CLIP task pool, which does not import under transformers 5;
# execute, unchanged, only the functions that do the merging, from the installed FusionBench source.
import fusion_bench.method.task_singular_vector.utils.TSVM_utils as tsvm_module
fb_dir = os.path.abspath(os.path.join(os.path.dirname(tsvm_module.__file__), "..", "..", ".."))
opcm_dir = os.path.join(fb_dir, "method", "opcm")


def load_functions(path, wanted, ns, cls=None):
    tree = ast.parse(open(path).read())
    body = tree.body
    if cls:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    fns = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    exec(compile(ast.Module(body=fns, type_ignores=[]), path, "exec"), ns)
    return ns


from typing import Tuple
opcm_ns = {"torch": torch, "Tensor": torch.Tensor, "Tuple": Tuple}
load_functions(os.path.join(opcm_dir, "utils.py"), ("_svd", "svd"), opcm_ns)
load_functions(os.path.join(opcm_dir, "opcm.py"), ("merge_linear_weights", "merge_other_parameters"), opcm_ns, cls="OPCMForCLIP")
OPCMForCLIP = types.SimpleNamespace(merge_linear_weights=opcm_ns["merge_linear_weights"],
                                    merge_other_parameters=opcm_ns["merge_other_parameters"])

alpha = 0.5
state = types.SimpleNamespace(previous_lambda_t=1, lambda_t=None)


def norm(sd):
    return torch.linalg.norm(torch.cat([sd[k].reshape(-1) for k in names]))


def is_linear(k):  # nn.Linear weights of LlamaForCausalLM (embed_tokens is nn.Embedding)
    return base[k].dim() == 2 and "embed" not in k


merged_model = {k: v.clone() for k, v in tasks[0].items()}
all_norms = [norm(tvs[0]).item()]
for t in tasks[1:]:
    # Mirrors OPCMForCLIP.run: lambda_t = 1 while merging, then rescale to the mean norm.
    all_norms.append(norm({k: t[k] - base[k] for k in names}).item())
    avg = float(np.mean(all_norms))
    state.lambda_t = 1
    for k in names:
        fn = OPCMForCLIP.merge_linear_weights if is_linear(k) else OPCMForCLIP.merge_other_parameters
        kwargs = {"alpha": alpha} if is_linear(k) else {}
        merged_model[k] = fn(state, merged_model[k], base[k], t[k], param_name=k, accelerator="cpu", **kwargs)
    tvn = norm({k: merged_model[k] - base[k] for k in names}).item()
    state.lambda_t *= tvn / avg
    for k in names:
        merged_model[k] = base[k] + (merged_model[k] - base[k]) * (avg / tvn)
    state.previous_lambda_t = state.lambda_t
    state.lambda_t = None
write("opcm", config("opcm", {"alpha": alpha}), merged_model, "FusionBench fusion_bench/method/opcm/opcm.py: OPCMForCLIP.merge_linear_weights for nn.Linear "
                   "weights, merge_other_parameters otherwise, the run() loop's norm rescaling; models in order task1, task2, task3.")
print("wrote", out_root)
