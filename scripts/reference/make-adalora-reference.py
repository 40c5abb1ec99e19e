#!/usr/bin/env python3
"""Makes four AdaLoRA fixtures under Tests/Fixtures/reference/models/ with PEFT 0.21.2 (torch, 1 thread). The
gradient fixtures have the layout of the shared grad-* fixtures: the adapter folder from save_pretrained
(adapter_config.json + adapter_model.safetensors), batch.json copied from the LoRA fixture whose batch they use,
expected.json, and grads.safetensors with d loss / d every saved adapter tensor, named as in the adapter file.
Dropout off (lora_dropout=0 → nn.Identity, model.eval()).

  grad-minilm-adalora:  the grad-minilm-seqcls batch through PEFT AdaLoRA on all-MiniLM-L6-v2 for sequence
                        classification (3 labels): AdaLoraConfig(init_r=6, target_r=2, lora_alpha=8,
                        target_modules=query,value, lora_dropout=0, orth_reg_weight=0.5, total_step=10 (PEFT
                        refuses total_step=None), task_type=SEQ_CLS); the classifier is in modules_to_save (PEFT
                        adds ["classifier", "score"] for SEQ_CLS). expected.json: `loss` (what PEFT returns: task
                        loss + orth_reg_weight · regulariser), `task_loss`, `orth_loss` (the regulariser before
                        weighting), `orth_reg_weight`, `logits`, and the scale facts. grads.safetensors: d loss /
                        d lora_A, lora_B, lora_E of every module and d loss / d classifier.{weight,bias}, all of
                        the TOTAL loss (the regulariser's gradient included).
  grad-smollm2-adalora: the grad-smollm2-lora batch through AdaLoRA on SmolLM2 q_proj [576→576] and v_proj
                        [576→192], init_r 6, target_r 2, lora_alpha 8, causal LM (labels as stored, -100 ignored).
                        expected.json: loss, task_loss, orth_loss, orth_reg_weight.
  adalora-allocation:   PEFT's RankAllocator alone, on a tiny module (see "The allocation fixture" below).
  peft-adalora-saved:   the model of grad-minilm-adalora after one importance update and the final (forced) rank
                        allocation, saved (rank_pattern set, tensors resized) and reloaded (see below).

Seeding: torch.manual_seed(0) before the base model is built (it seeds the new classifier head), then PEFT's
init (lora_A, lora_B ~ N(0, 0.02²), lora_E = 0), then every lora_E is set to 0.5·N(0,1) (PEFT inits it to zeros,
which would make d loss / d A and d loss / d B zero). peft-adalora-saved repeats exactly this and asserts the
same tensors.

AdaLoRA forward (peft/tuners/adalora/layer.py, SVDLinear.forward):
    self.scaling[adapter_name] = lora_alpha if lora_alpha > 0 else float(r)      # update_layer: NOT alpha/r
    self.ranknum[adapter_name].data.fill_(float(r))                              # r = init_r
    ranknum = self.ranknum[active_adapter] + 1e-5
    result += (dropout(x) @ (lora_A * lora_E).T @ lora_B.T) * scaling / ranknum
  lora_A [r, in] ("right singular vectors"), lora_E [r, 1] (singular values, broadcast over A's rows),
  lora_B [out, r]. So Δy = ((x · (A∘E)ᵀ) · Bᵀ) · lora_alpha / (ranknum + 1e-5), evaluated left to right:
  x @ (A*E).T first, then @ B.T, then × scaling (a Python int, 8), then ÷ (ranknum + 1e-5) where ranknum is a
  float32 tensor holding float(init_r) = 6.0, so the divisor is float32(6 + 1e-5). Nothing ever updates ranknum
  during training (masking only zeroes lora_E), so the scale stays lora_alpha / (init_r + 1e-5) = 8 / 6.00001.
  get_delta_weight: transpose(B @ (A * E), fan_in_fan_out) * scaling / (ranknum + 1e-5).
  Init (reset_lora_parameters): zeros_(lora_E); normal_(lora_A, 0, 0.02); normal_(lora_B, 0, 0.02).

Orthogonal regulariser (peft/tuners/adalora/model.py, AdaLoraModel.forward, applied whenever the wrapped
model's output has a tensor `loss`, i.e. whenever labels are given):
    for n, p in self.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and self.trainable_adapter_name in n:
            para_cov = p @ p.T if "lora_A" in n else p.T @ p
            I = torch.eye(*para_cov.size(), out=torch.empty_like(para_cov))
            num_param += 1
            regu_loss += torch.norm(para_cov - I, p="fro")
    if num_param > 0: regu_loss = regu_loss / num_param
    outputs.loss += orth_reg_weight * regu_loss
  i.e. orth = mean over every lora_A and every lora_B matrix (each counts once; 2 per module) of the Frobenius
  norm (NOT squared) of AAᵀ − I_r (A [r,in]) or BᵀB − I_r (B [out,r]). lora_E is not in it. The returned loss
  is task_loss + orth_reg_weight · orth; checked here against the inner model's own loss (`task_loss`, run
  without the AdaLoRA wrapper's forward) and a re-implementation of the regulariser. PeftModelForSequenceClass-
  ification / ForCausalLM call self.base_model(...) = AdaLoraModel.forward, so the regulariser is in both.
  NB: a model reloaded with PeftModel.from_pretrained (inference mode) has no trainable_adapter_name, so calling
  it WITH labels raises AttributeError ('…has no attribute trainable_adapter_name'); logits-only calls work.

Saving (AdaLoraModel._get_adapter_state_dict):
    to_return = {k: v for k, v in to_return.items() if not k.endswith(f".ranknum.{adapter_name}")}
    rank_pattern = config.rank_pattern
    if rank_pattern is not None:
        rank_pattern = {k.replace(f".{adapter_name}", ""): v for k, v in rank_pattern.items()}
        config.rank_pattern = rank_pattern
        to_return = model.resize_state_dict_by_rank_pattern(rank_pattern, to_return, adapter_name)
  Tensor names: base_model.model.<module path>.lora_A / .lora_B / .lora_E (adapter name dropped, as for LoRA);
  the classifier as base_model.model.classifier.weight / .bias. ranknum is never saved. With rank_pattern None
  (no allocation yet — the case of both grad fixtures, asserted) nothing is resized: lora_A [init_r, in],
  lora_B [out, init_r], lora_E [init_r, 1], so their adapter_model.safetensors IS the full-rank state.
  With a rank_pattern (resize_state_dict_by_rank_pattern): for each key, rank = sum(mask);
  lora_E/lora_A keep rows [mask] and lora_B keeps columns [:, mask] (order preserved) unless rank equals the
  current size. rank_pattern in adapter_config.json: {"<module path relative to the transformers model>.lora_E":
  [bool × init_r], …} e.g. "bert.encoder.layer.0.attention.self.query.lora_E": [true, false, …]; True = kept.
  (Saving also rewrites the LIVE config's keys to this adapter-name-free form — a side effect.)
Loading (AdaLoraModel._remap_adapter_state_dict_for_load → resize_modules_by_rank_pattern): the model is first
  built at init_r, then for each rank_pattern entry
    rank = sum(rank_idx); ranknum = target.ranknum[adapter_name]
    target.update_layer(adapter_name, rank, lora_config.lora_alpha, config=lora_config)   # ranknum := rank …
    if rank > 0: … target.ranknum[adapter_name].copy_(ranknum)   # "The scaling is exactly as the previous"
  so after reload ranknum = init_r (6.0), NOT the kept rank: the scale stays lora_alpha / (init_r + 1e-5) and
  the reloaded model reproduces the pre-save logits (observed: peft-adalora-saved expected.json). (A module
  whose kept rank is 0 keeps ranknum 0, harmlessly: its A/B/E are empty.)

The allocation fixture (adalora-allocation). A module tree lin0 = Linear(8→6), lin1 = Linear(10→4),
lin2 = Linear(5→7) through get_peft_model(AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8,
target_modules=[lin0, lin1, lin2], tinit=2, tfinal=3, deltaT=2, beta1=0.85, beta2=0.85, total_step=12)), so
lin0: A [4,8], B [6,4], E [4,1]; lin1: A [4,10], B [4,4]; lin2: A [4,5], B [7,4]. Parameter names as PEFT's
allocator sees them (named_parameters of AdaLoraModel.model, the wrapped tiny module): "lin0.lora_A.default",
"lin0.lora_B.default", "lin0.lora_E.default", … For step s = 0 … 11 — PEFT's own example loop
(examples/conditional_generation/peft_adalora_seq2seq.py) starts `global_step = 0`, calls
model.base_model.update_and_allocate(global_step) after optimizer.step() and then `global_step += 1`, so the
first call gets 0 (the docstring's `update_and_allocate(i_step)` leaves i_step undefined) — every lora_ param's
value AND .grad are overwritten with N(0,1) from torch.Generator().manual_seed(1000 + s) (for each parameter
in named_parameters order: value = randn(shape), then grad = randn(shape)), then
model.base_model.update_and_allocate(s) is called. inputs.safetensors: "step<s>.<param>.value" and
"step<s>.<param>.grad". outputs.safetensors after the call: "step<s>.<module>.lora_E.default" (every E), the
allocator's state "step<s>.<param>.ipt" / ".exp_avg_ipt" / ".exp_avg_unc" (absent once reset), and at the
masking steps "step<s>.<module>.lora_E.default.triplet_score" [r, 1] (from a re-implementation that is asserted
to mask exactly as PEFT). expected.json: config, init_bgt, target_bgt, name_set, and per step: budget and
mask_ind of rankallocator.budget_schedule(s), `action` (which branch ran), `threshold` (masking steps),
`config_rank_pattern` (peft_config.rank_pattern after the call, as stored: live keys with ".default"),
`ranks` (sum of it per module).
  The algorithm (peft/tuners/adalora/layer.py RankAllocator, model.py AdaLoraModel.update_and_allocate):
  * Budgets (_set_budget_scheduler): init_bgt = Σ over lora_A params of p.size(0) (= 3·4 = 12);
    target_bgt = target_r · number of modules (= 2·3 = 6).
  * budget_schedule(step):
        if step <= tinit:                 budget = init_bgt;  mask_ind = False
        elif step > total_step - tfinal:  budget = target_bgt; mask_ind = True
        else:
            mul_coeff = 1 - (step - tinit) / (total_step - tfinal - tinit)
            budget = int((init_bgt - target_bgt) * (mul_coeff**3) + target_bgt)   # Python double, truncated
            mask_ind = step % deltaT == 0
    Here: steps 0-2 → 12; 3 → 9; 4 → 8 (mask); 5 → 7; 6 → 6 (mask); 7 → 6; 8 → 6 (mask); 9 → 6.
  * AdaLoraModel.update_and_allocate(global_step), with T = total_step - tfinal (= 9):
        if global_step < T:   _, rank_pattern = self.rankallocator.update_and_allocate(self.model, global_step)
                              if rank_pattern: lora_config.rank_pattern = rank_pattern
        elif global_step == T: _, rank_pattern = self.rankallocator.update_and_allocate(self.model, global_step,
                                                                                      force_mask=True)
                              lora_config.rank_pattern = rank_pattern
                              self.rankallocator.reset_ipt()
        elif global_step > T: self.rankallocator.mask_using_rank_pattern(self.model, lora_config.rank_pattern)
    RankAllocator.update_and_allocate(model, global_step, force_mask=False):
        if global_step < self.peft_config.total_step - self.peft_config.tfinal: self.update_ipt(model)
        budget, mask_ind = self.budget_schedule(global_step)
        if mask_ind or force_mask: rank_pattern = self.mask_to_budget(model, budget)
        else: rank_pattern = None
    So: steps < T update the importance and mask when mask_ind; step T does NOT update the importance (uses the
    EMAs from step T-1), masks with budget_schedule(T)'s budget, stores the pattern and clears the EMAs; steps > T
    only zero E where the stored pattern is False (values are not re-scored; grads unused).
  * update_ipt, for every parameter whose name contains "lora_" and the adapter name (A, B and E), elementwise,
    with dicts starting at zeros_like(p) (float32 throughout; the scalars 0.85 and 1-0.85 enter as float32):
        self.ipt[n] = (p * p.grad).abs().detach()
        self.exp_avg_ipt[n] = self.beta1 * self.exp_avg_ipt[n] + (1 - self.beta1) * self.ipt[n]
        self.exp_avg_unc[n] = self.beta2 * self.exp_avg_unc[n] + (1 - self.beta2) * (self.ipt[n] - self.exp_avg_ipt[n]).abs()
    (note: the uncertainty uses the exp_avg_ipt just updated in this same step).
  * mask_to_budget(model, budget): element score S = exp_avg_ipt * exp_avg_unc (_element_score), then per module
        A [r, in]:  comb = torch.mean(S_A, dim=1, keepdim=True)              → [r, 1]  (mean over in_features)
        B [out, r]: comb = torch.mean(S_B, dim=0, keepdim=False).view(-1, 1)   → [r, 1]  (mean over out_features)
        ipt_AB = torch.cat([comb_A, comb_B], dim=1)   (named_parameters order: A before B)
        sum_ipt = S_E.view(-1) + ipt_AB.sum(dim=1)   → triplet score t_i = S_E[i] + mean_j S_A[i,j] + mean_k S_B[k,i]
    i.e. E's score is used as is, A's and B's are MEANS (not sums) over their non-rank dimension, and the three
    are SUMMED. Then
        mask_threshold = torch.kthvalue(torch.cat(all_score), k=self.init_bgt - budget)[0].item()
    (the k-th SMALLEST of all init_bgt triplet scores across modules, k 1-based), and for every lora_E:
        p.masked_fill_(triplet_ipt[n] <= mask_threshold, 0.0)
        rank_pattern[n] = (~(triplet_ipt[n] <= mask_threshold)).view(-1).tolist()
    `<=`: the k lowest triplets are zeroed (more on ties), init_bgt - k = budget survive; only lora_E is
    zeroed, A and B are untouched; keys are the allocator's names ("lin0.lora_E.default"); True = kept. The
    masking is not sticky: a triplet zeroed at one step can come back (its E is a trained parameter) and is
    re-scored at the next masking step.
  * mask_using_rank_pattern(model, rank_pattern): for every lora_E,
        p.masked_fill_(~torch.Tensor(rank_pattern[key]).unsqueeze(-1).bool(), 0.0)
    (key with or without ".<adapter>" depending on whether the pattern's first key contains the adapter name).
  Observed here: ranks after steps 4/6/8/9 = (2,4,2) / (2,2,2) / (1,3,2) / (1,3,2) for lin0/lin1/lin2 —
  step 9 repeats step 8's pattern because it scores the same EMAs with the same budget (E's values do not
  enter the score). Steps 10 and 11: budget_schedule says (6, True) but is not consulted. The allocator sees
  the parameters in the order lin0.lora_A, lin0.lora_B, lin0.lora_E, lin1.…; nothing depends on the order
  (E + (A + B) of two terms is exact either way, kthvalue is order-free). The k-th and (k+1)-th smallest
  scores differ by ≥ 2 % at every masking step, so float32 re-computations agree on the masks.

peft-adalora-saved: grad-minilm-adalora's model (same seed, same perturbation — asserted equal), forward +
backward of the TOTAL loss on the grad-minilm-seqcls batch, then base_model.update_and_allocate(0) (importance
update only: 0 <= tinit = 0) and base_model.update_and_allocate(10) (= total_step - tfinal: forced mask with
budget_schedule(10) = target_bgt = 2·12 = 24 of 72, reset_ipt). So the EMAs used are those of one update from
zero: exp_avg_ipt = 0.15·ipt, exp_avg_unc = 0.15·|ipt − 0.15·ipt| (float32 ops), ipt = |p · grad|, grads =
grad-minilm-adalora/grads.safetensors. Files: adapter_config.json + adapter_model.safetensors (save_pretrained,
resized), unresized.safetensors (the full-rank tensors at save time — E already masked — under the saved
names), batch.json, expected.json: logits_before_save (the live masked model, no labels), logits_reloaded
(PeftModel.from_pretrained on a fresh base, eval, no labels), max_abs_diff, threshold, live_rank_pattern (keys
with ".default", as before saving), saved_rank_pattern (adapter_config.json's), ranks, saved_shapes,
ranknum_after_reload / r_after_reload per module, forward_with_labels_after_reload. Observed: ranks
(q0 2, v0 1, q1 1, v1 1, q2 1, v2 3, q3 1, v3 3, q4 1, v4 3, q5 2, v5 5; Σ 24), saved tensors e.g. query.lora_A
[2, 384], lora_B [384, 2], lora_E [2, 1]; ranknum after reload 6.0 everywhere while r = the kept rank; logits
before save vs after reload differ by 1.6e-8 (only the summation over the zeroed triplets disappears). The
threshold (6.09e-12: scores ∝ ipt², tiny) is 0.04 % below the next score, so a re-computation must use these
gradients (grad-minilm-adalora/grads.safetensors), not its own, to be sure of the same pattern.

  make-adalora-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import copy, json, os, shutil, sys
import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from peft import AdaLoraConfig, PeftModel, get_peft_model

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")
ADAPTER = "default"


def minilm_config():
    return AdaLoraConfig(init_r=6, target_r=2, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                         orth_reg_weight=0.5, total_step=10, task_type="SEQ_CLS")


def perturb_E(m):
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_E" in n:
                p.copy_(0.5 * torch.randn_like(p))  # off PEFT's init of zeros


def orth_reg(inner):
    """AdaLoraModel.forward's regulariser, re-implemented (before weighting)."""
    norms = []
    for n, p in inner.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and ADAPTER in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            norms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0]), ord="fro"))
    return sum(norms) / len(norms)


def run(m, batch, labels=True):
    kw = dict(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]))
    if labels: kw["labels"] = torch.tensor(batch["labels"])
    return m(**kw)


def saved_to_live(saved, params):
    # PEFT's saved name drops the adapter name that the live parameter carries (live `…query.lora_A.default`,
    # saved `…query.lora_A`; live `…classifier.modules_to_save.default.weight`, saved `…classifier.weight`).
    hit = [n for n in params if n.replace(f".{ADAPTER}", "").replace(".modules_to_save", "") in (saved, saved + ".weight")]
    assert len(hit) == 1, (saved, hit)
    return hit[0]


def tidy(out):
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme): os.remove(readme)  # PEFT's model-card template
    for f in os.listdir(out): os.chmod(os.path.join(out, f), 0o644)


def finish(m, src, out, expected):
    """Save the adapter (asserting full rank, no ranknum), the gradients under the saved names, expected.json and
    the batch."""
    cfg = m.peft_config[ADAPTER]
    assert cfg.rank_pattern is None  # no allocation yet → save_pretrained does not resize
    m.save_pretrained(out)
    f = safe_open(os.path.join(out, "adapter_model.safetensors"), "pt")
    names = list(f.keys())
    assert not any("ranknum" in n for n in names), names
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    grads, used = {}, set()
    for saved in names:
        live = saved_to_live(saved, params)
        p = params[live]
        assert tuple(f.get_slice(saved).get_shape()) == tuple(p.shape), saved  # full rank as saved
        assert torch.equal(f.get_tensor(saved), p.detach()), saved
        if ".lora_A" in saved or ".lora_E" in saved: assert p.shape[0] == cfg.init_r
        if ".lora_B" in saved: assert p.shape[1] == cfg.init_r
        assert p.grad is not None, saved
        grads[saved] = p.grad.detach().clone().contiguous()
        used.add(live)
    assert used == set(params), sorted(set(params) - used)  # every trainable tensor is in the adapter file
    save_file(grads, os.path.join(out, "grads.safetensors"))
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    tidy(out)
    print("wrote", out, "loss", expected["loss"], "task", expected["task_loss"], "orth", expected["orth_loss"],
          "tensors", len(names))
    return names


def losses(m, batch):
    """PEFT's total loss (with graph), the inner model's task loss and the regulariser, cross-checked."""
    res = run(m, batch)
    inner = m.base_model.model
    with torch.no_grad():
        task = run(inner, batch)  # the transformers model's own loss, without AdaLoraModel.forward's addition
        orth = orth_reg(inner)
    w = m.peft_config[ADAPTER].orth_reg_weight
    total = res.loss.item()
    assert abs(total - (task.loss.item() + w * orth.item())) <= 1e-6 * max(1.0, abs(total)), (total, task.loss, orth)
    assert torch.allclose(res.logits, task.logits, atol=0, rtol=0)
    return res, task.loss.item(), orth.item()


def scale_facts(m):
    layers = [mod for mod in m.modules() if hasattr(mod, "ranknum") and ADAPTER in getattr(mod, "ranknum", {})]
    rk = {float(l.ranknum[ADAPTER].item()) for l in layers}
    sc = {l.scaling[ADAPTER] for l in layers}
    assert len(rk) == 1 and len(sc) == 1, (rk, sc)
    ranknum, scaling = rk.pop(), sc.pop()
    divisor = (torch.tensor([ranknum]) + 1e-5).item()
    return {"scaling": scaling, "ranknum": ranknum, "ranknum_plus_eps_f32": divisor, "modules": len(layers)}


def check_reload(base, out, batch, logits):
    r = PeftModel.from_pretrained(base, out)
    r.eval()
    with torch.no_grad():
        again = run(r, batch, labels=False).logits
    diff = (again - logits).abs().max().item()
    print("reloaded", out, "max |Δlogits|", diff)
    assert diff <= 1e-5, diff
    return r, again


def load_smollm2():
    d, f = os.path.split(smollm2_gguf)
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Re-implementation of RankAllocator's scoring (asserted against PEFT's masks), for thresholds and triplet scores.
def triplet_scores(ipt_avg, unc_avg, e_names):
    """{E name: [r,1] score} from the EMA dicts, as RankAllocator.mask_to_budget computes it."""
    out = {}
    for e in e_names:
        a, b = e.replace("lora_E", "lora_A"), e.replace("lora_E", "lora_B")
        sa = ipt_avg[a] * unc_avg[a]; sb = ipt_avg[b] * unc_avg[b]; se = ipt_avg[e] * unc_avg[e]
        ab = torch.cat([torch.mean(sa, dim=1, keepdim=True), torch.mean(sb, dim=0, keepdim=False).view(-1, 1)], dim=1)
        out[e] = (se.view(-1) + ab.sum(dim=1, keepdim=False).view(-1)).view(-1, 1)
    return out


def threshold(scores, init_bgt, budget):
    return torch.kthvalue(torch.cat([s.view(-1) for s in scores.values()]), k=init_bgt - budget)[0].item()


# ---------------------------------------------------------------------------------------------------------------
# 1. AdaLoRA on MiniLM, sequence classification.
src = os.path.join(models, "grad-minilm-seqcls")
out1 = os.path.join(models, "grad-minilm-adalora")
os.makedirs(out1, exist_ok=True)
batch_minilm = json.load(open(os.path.join(src, "batch.json")))
torch.manual_seed(0)
m = get_peft_model(AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3), minilm_config())
perturb_E(m)
m.eval()
assert sorted(m.peft_config[ADAPTER].modules_to_save) == ["classifier", "score"]
res, task_loss, orth_loss = losses(m, batch_minilm)
res.loss.backward()
facts = scale_facts(m)
assert facts["scaling"] == 8 and facts["ranknum"] == 6.0 and facts["modules"] == 12, facts
logits1 = res.logits.detach().clone()
finish(m, src, out1, {"loss": res.loss.item(), "task_loss": task_loss, "orth_loss": orth_loss,
                      "orth_reg_weight": 0.5, "logits": logits1.tolist(), **facts})
del m
check_reload(AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3), out1, batch_minilm, logits1)

# 2. AdaLoRA on SmolLM2, causal LM.
src = os.path.join(models, "grad-smollm2-lora")
out = os.path.join(models, "grad-smollm2-adalora")
os.makedirs(out, exist_ok=True)
batch = json.load(open(os.path.join(src, "batch.json")))
torch.manual_seed(0)
m = get_peft_model(load_smollm2(), AdaLoraConfig(init_r=6, target_r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0, orth_reg_weight=0.5, total_step=10,
                                                 task_type="CAUSAL_LM"))
perturb_E(m)
m.eval()
res, task_loss, orth_loss = losses(m, batch)  # task loss: mean over non--100 labels after the shift
res.loss.backward()
facts = scale_facts(m)
assert facts["scaling"] == 8 and facts["ranknum"] == 6.0 and facts["modules"] == 60, facts
logits2 = res.logits.detach().clone()
finish(m, src, out, {"loss": res.loss.item(), "task_loss": task_loss, "orth_loss": orth_loss,
                     "orth_reg_weight": 0.5, **facts})
del m, res
check_reload(load_smollm2(), out, batch, logits2)
del logits2


# 3. RankAllocator alone on a tiny module tree.
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(8, 6)
        self.lin1 = nn.Linear(10, 4)
        self.lin2 = nn.Linear(5, 7)

    def forward(self, x):
        return x


out = os.path.join(models, "adalora-allocation")
os.makedirs(out, exist_ok=True)
acfg = dict(init_r=4, target_r=2, lora_alpha=8, target_modules=["lin0", "lin1", "lin2"], lora_dropout=0.0,
            tinit=2, tfinal=3, deltaT=2, beta1=0.85, beta2=0.85, orth_reg_weight=0.5, total_step=12)
torch.manual_seed(0)
pm = get_peft_model(Tiny(), AdaLoraConfig(**acfg))
ada = pm.base_model  # AdaLoraModel
ra = ada.rankallocator
inner = ada.model  # the Tiny module with SVDLinear layers: what the allocator iterates
lora = [(n, p) for n, p in inner.named_parameters() if "lora_" in n and ADAPTER in n]
e_names = [n for n, _ in lora if ".lora_E." in n]
assert sorted(n for n, _ in lora) == sorted(f"lin{i}.lora_{x}.{ADAPTER}" for i in range(3) for x in "ABE"), lora
assert ra.init_bgt == 12 and ra.target_bgt == 6, (ra.init_bgt, ra.target_bgt)
T = acfg["total_step"] - acfg["tfinal"]
inputs, outputs, steps = {}, {}, []
ref_ipt, ref_avg, ref_unc, ref_pattern = {}, {}, {}, None  # the re-implementation's state
b1, b2 = acfg["beta1"], acfg["beta2"]
for s in range(acfg["total_step"]):
    g = torch.Generator().manual_seed(1000 + s)
    with torch.no_grad():
        for n, p in lora:
            v = torch.randn(p.shape, generator=g); gr = torch.randn(p.shape, generator=g)
            p.copy_(v); p.grad = gr.clone()
            inputs[f"step{s}.{n}.value"] = v; inputs[f"step{s}.{n}.grad"] = gr
    e_in = {n: p.detach().clone() for n, p in lora if n in e_names}
    budget, mask_ind = ra.budget_schedule(s)
    # --- the re-implementation, before PEFT runs ---
    thr, scores, expect_E, action = None, None, None, None
    if s < T:
        for n, p in lora:
            if n not in ref_avg: ref_avg[n] = torch.zeros_like(p); ref_unc[n] = torch.zeros_like(p)
            ref_ipt[n] = (p.detach() * p.grad).abs()
            ref_avg[n] = b1 * ref_avg[n] + (1 - b1) * ref_ipt[n]
            ref_unc[n] = b2 * ref_unc[n] + (1 - b2) * (ref_ipt[n] - ref_avg[n]).abs()
        action = "update_ipt+mask_to_budget" if mask_ind else "update_ipt"
    elif s == T:
        action = "mask_to_budget(force_mask)+reset_ipt"
    else:
        action = "mask_using_rank_pattern"
    if action.endswith("mask_to_budget") or s == T:
        scores = triplet_scores(ref_avg, ref_unc, e_names)
        thr = threshold(scores, ra.init_bgt, budget)
        expect_E = {e: e_in[e].masked_fill(scores[e] <= thr, 0.0) for e in e_names}
        pattern = {e: (~(scores[e] <= thr)).view(-1).tolist() for e in e_names}
        ref_pattern = pattern
    elif s > T:
        expect_E = {e: e_in[e].masked_fill(~torch.tensor(ref_pattern[e]).unsqueeze(-1), 0.0) for e in e_names}
    else:
        expect_E = e_in
    # --- PEFT ---
    ada.update_and_allocate(s)
    if s == T: ref_avg, ref_unc, ref_ipt = {}, {}, {}
    e_out = {n: p.detach().clone() for n, p in lora if n in e_names}
    for e in e_names:
        assert torch.equal(e_out[e], expect_E[e]), (s, e, e_out[e], expect_E[e])
        outputs[f"step{s}.{e}"] = e_out[e]
        if scores is not None: outputs[f"step{s}.{e}.triplet_score"] = scores[e].clone()
    for n, _ in lora:
        if n in ra.ipt:
            for key, d, ref in (("ipt", ra.ipt, ref_ipt), ("exp_avg_ipt", ra.exp_avg_ipt, ref_avg),
                                ("exp_avg_unc", ra.exp_avg_unc, ref_unc)):
                assert torch.equal(d[n], ref[n]), (s, n, key)
                outputs[f"step{s}.{n}.{key}"] = d[n].clone()
    if s == T: assert ra.ipt == {} and ra.exp_avg_ipt == {} and ra.exp_avg_unc == {}
    rp = copy.deepcopy(pm.peft_config[ADAPTER].rank_pattern)
    if thr is not None: assert rp == ref_pattern, (s, rp, ref_pattern)
    steps.append({"step": s, "budget": budget, "mask_ind": mask_ind, "action": action, "threshold": thr,
                  "config_rank_pattern": rp, "ranks": None if rp is None else {k: sum(v) for k, v in rp.items()}})
    print("step", s, "budget", budget, "mask", mask_ind, action, "ranks", steps[-1]["ranks"])
assert [x["budget"] for x in steps[:10]] == [12, 12, 12, 9, 8, 7, 6, 6, 6, 6], [x["budget"] for x in steps]
assert sum(steps[T]["ranks"].values()) == ra.target_bgt
save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "inputs.safetensors"))
save_file({k: v.contiguous() for k, v in outputs.items()}, os.path.join(out, "outputs.safetensors"))
json.dump({"config": acfg, "module_shapes": {"lin0": [8, 6], "lin1": [10, 4], "lin2": [5, 7]},
           "param_names": [n for n, _ in lora], "param_shapes": {n: list(p.shape) for n, p in lora},
           "init_bgt": ra.init_bgt, "target_bgt": ra.target_bgt, "name_set": list(ra.name_set),
           "steps_start_at": 0, "seed": "torch.Generator().manual_seed(1000 + step); per param: value, then grad",
           "steps": steps}, open(os.path.join(out, "expected.json"), "w"), indent=1)
tidy(out)
print("wrote", out)
del pm, ada, ra, inner, lora

# 4. Saved after allocation, reloaded.
out = os.path.join(models, "peft-adalora-saved")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
m = get_peft_model(AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3), minilm_config())
perturb_E(m)
m.eval()
f1 = safe_open(os.path.join(out1, "adapter_model.safetensors"), "pt")
params = {n: p for n, p in m.named_parameters() if p.requires_grad}
for saved in f1.keys():  # the same state as grad-minilm-adalora
    assert torch.equal(f1.get_tensor(saved), params[saved_to_live(saved, params)].detach()), saved
res = run(m, batch_minilm)
res.loss.backward()
ada = m.base_model
inner = ada.model
ada.update_and_allocate(0)  # importance update only (0 <= tinit)
ref_avg = {n: p.detach().clone() for n, p in ada.rankallocator.exp_avg_ipt.items()}
ref_unc = {n: p.detach().clone() for n, p in ada.rankallocator.exp_avg_unc.items()}
e_names = [n for n, _ in inner.named_parameters() if ".lora_E." in n]
e_before = {n: p.detach().clone() for n, p in inner.named_parameters() if n in e_names}
cfg = m.peft_config[ADAPTER]
final = cfg.total_step - cfg.tfinal
budget, _ = ada.rankallocator.budget_schedule(final)
assert budget == ada.rankallocator.target_bgt == 24 and ada.rankallocator.init_bgt == 72
ada.update_and_allocate(final)  # forced mask at total_step - tfinal, then reset_ipt
scores = triplet_scores(ref_avg, ref_unc, e_names)
thr = threshold(scores, ada.rankallocator.init_bgt, budget)
live_rp = copy.deepcopy(cfg.rank_pattern)
assert live_rp == {e: (~(scores[e] <= thr)).view(-1).tolist() for e in e_names}
for n, p in inner.named_parameters():
    if n in e_names: assert torch.equal(p.detach(), e_before[n].masked_fill(scores[n] <= thr, 0.0)), n
ranks = {k.replace(f".{ADAPTER}", ""): sum(v) for k, v in live_rp.items()}
assert sum(ranks.values()) == 24 and len(set(ranks.values())) > 1, ranks  # non-uniform
with torch.no_grad():
    logits_before = run(m, batch_minilm, labels=False).logits.detach().clone()
unresized = {}
for n, p in m.named_parameters():
    if p.requires_grad:
        unresized[n.replace(f".{ADAPTER}", "").replace(".modules_to_save", "")] = p.detach().clone().contiguous()
m.save_pretrained(out)
assert list(cfg.rank_pattern) == list(ranks)  # side effect: saving strips ".default" from the live config's keys
save_file(unresized, os.path.join(out, "unresized.safetensors"))
saved_cfg = json.load(open(os.path.join(out, "adapter_config.json")))
assert saved_cfg["rank_pattern"] == {k.replace(f".{ADAPTER}", ""): v for k, v in live_rp.items()}
f = safe_open(os.path.join(out, "adapter_model.safetensors"), "pt")
saved_shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
assert set(saved_shapes) == set(unresized), set(saved_shapes) ^ set(unresized)
for k, shape in saved_shapes.items():  # resized = the kept rows (A, E) / columns (B) of the unresized tensors
    if ".lora_" in k:
        module = k.rsplit(".lora_", 1)[0].removeprefix("base_model.model.")
        keep = torch.tensor(saved_cfg["rank_pattern"][module + ".lora_E"])
        want = unresized[k][:, keep] if k.endswith("lora_B") else unresized[k][keep]
    else:
        want = unresized[k]
    assert torch.equal(f.get_tensor(k), want), k
del m
base = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)
r, logits_reloaded = check_reload(base, out, batch_minilm, logits_before)
ranknum, rr = {}, {}
for n, mod in r.base_model.model.named_modules():
    if hasattr(mod, "ranknum") and ADAPTER in getattr(mod, "ranknum", {}):
        ranknum[n] = mod.ranknum[ADAPTER].item(); rr[n] = mod.r[ADAPTER]
        assert rr[n] == ranks[n + ".lora_E"] and tuple(mod.lora_A[ADAPTER].shape) == (rr[n], mod.in_features)
try:
    run(r, batch_minilm)
    labels_on_reload = "works"
except AttributeError as e:
    labels_on_reload = f"AttributeError: {e}"
json.dump({"steps_called": [0, final], "budget": budget, "threshold": thr,
           "logits_before_save": logits_before.tolist(), "logits_reloaded": logits_reloaded.tolist(),
           "max_abs_diff": (logits_before - logits_reloaded).abs().max().item(),
           "loss_before_allocation": res.loss.item(),
           "live_rank_pattern": live_rp, "saved_rank_pattern": saved_cfg["rank_pattern"], "ranks": ranks,
           "saved_shapes": saved_shapes, "unresized_shapes": {k: list(v.shape) for k, v in unresized.items()},
           "ranknum_after_reload": ranknum, "r_after_reload": rr, "forward_with_labels_after_reload": labels_on_reload},
          open(os.path.join(out, "expected.json"), "w"), indent=1)
shutil.copy(os.path.join(models, "grad-minilm-seqcls", "batch.json"), os.path.join(out, "batch.json"))
tidy(out)
print("wrote", out, "ranks", ranks, "ranknum after reload", set(ranknum.values()),
      "max |Δlogits|", (logits_before - logits_reloaded).abs().max().item(), "labels on reload:", labels_on_reload)
