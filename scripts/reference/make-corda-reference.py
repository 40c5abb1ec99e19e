#!/usr/bin/env python3
"""Makes three fixtures under Tests/Fixtures/reference/models/ for PEFT's CorDA LoRA initialisation
(init_lora_weights="corda", Yang et al. 2024, "CorDA: Context-Oriented Decomposition Adaptation"), as implemented
in PEFT 0.21.2: peft/tuners/lora/corda.py (preprocess_corda → calib_cov_distribution → collect_eigens →
crop_corda_eigens) and LoraLayer.corda_init in peft/tuners/lora/layer.py.

  corda-minilm:      all-MiniLM-L6-v2 as a plain BertModel (no head, so nothing random), LoraConfig(r=4,
                     lora_alpha=8, target_modules=["query","value"], init_lora_weights="corda",
                     corda_config=CordaConfig(corda_method="ipm")) — 12 modules. Calibration: 4 short texts, each
                     run ALONE (batch of 1, unpadded, attention mask all ones).
                     expected.safetensors: <module>.lora_A / .lora_B for all 12 modules, <module>.singular_values
                     (the r kept singular values of W·C̃, before the division by the scaling) for all 12,
                     <module>.weight_residual for encoder.layer.0.attention.self.query and
                     encoder.layer.5.attention.self.value, and <module>.covariance, <module>.lora_A_f64,
                     <module>.lora_B_f64 for encoder.layer.0.attention.self.query.
  corda-minilm-kpm:  the same with corda_method="kpm"; A, B, singular values for all 12; residual, covariance
                     (identical to corda-minilm's, stored again so the fixture stands alone), lora_A_f64,
                     lora_B_f64 for encoder.layer.0.attention.self.query.
  corda-smollm2:     SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to float32 by transformers), q_proj and v_proj
                     of layers 0 and 29 only (layers_to_transform=[0, 29]), r=4, lora_alpha=8, ipm. Calibration:
                     2 short ChatML texts, each run alone. A, B, singular values for the 4 modules; residual,
                     covariance, lora_A_f64, lora_B_f64 for model.layers.29.self_attn.v_proj.

<module>.lora_A_f64 / .lora_B_f64: the same algorithm recomputed in float64 from the STORED float32 covariance and
the float32 base weight (both cast to float64), with a fixed sign convention (in each column of B the entry of
largest magnitude is positive; A's row flips with it). PEFT itself works in float32, and its inverse of the
damped covariance (condition number ~3e3 for MiniLM) costs ~1e-3 relative accuracy in A, so a float64 port fed
the stored covariance should match the _f64 tensors tightly and PEFT's lora_A only to ~1e-2 relative.
kpm caveat: with 4 short texts (~35 tokens) C has rank ~25 of 384, and the r smallest singular values of W·C̃
for MiniLM are ~1e-6 against ~4 at the top, i.e. at float32 rounding level: PEFT's float32 kpm A/B (and its
kept singular values, e.g. 3.19e-6 vs 3.52e-6 in float64) are rounding noise, not reproducible element-wise. Even
in float64 the tail is sensitive to the covariance itself (a 1e-7 relative change of C moves it), so compare kpm
against the _f64 tensors only when starting from the stored covariance; otherwise check shapes, tiny singular
values, W − W_res tiny, the residual identity and the preserved function.

Module names are the names in the un-wrapped model (= the tensor names of the MiniLM model.safetensors minus
".weight"; for SmolLM2 the transformers names "model.layers.N.self_attn.q_proj"). The PEFT-wrapped names are
"base_model.model." + name. Tensors are float32; A is (r, in), B is (out, r), residual and weight are (out, in)
(nn.Linear layout), covariance is (in, in).

batch.json: the calibration texts and their exact token ids (one list per text; each text is its own forward pass).
expected.json: config, module list, per-module damping / inverse error / singular values, the PEFT API sequence,
the algorithm with quoted source lines, and the checks below.

Checks made (recorded in expected.json["checks"]):
  * function preserved: the PEFT model right after get_peft_model vs the original model on the calibration texts
    (MiniLM: last_hidden_state, SmolLM2: logits) — max abs difference (float32 rounding only, since
    W_res = W − scaling·B·A and the forward computes W_res·x + scaling·B·(A·x)).
  * residual identity: max |W_res + scaling·B·A − W| per stored residual.
  * independent float64 re-implementation of the algorithm as described here (own forward hooks → covariance →
    damping loop → SVD → crop → A, B, W_res), compared with PEFT: covariance max abs/rel diff, and the delta
    scaling·B·A (sign-invariant) max abs diff, and A/B after per-component sign alignment. The covariance is
    compared against own float64 hooks; the rest is recomputed from PEFT's float32 covariance (as for _f64).
  * float32 replay: the same steps with the same torch calls in float32 from PEFT's covariance — reproduces
    PEFT's A, B, W_res exactly (max abs diff 0), which pins the description down.
    The float64 check validates the description; it also shows the tolerances a float64 or float32 Swift port should use.

The algorithm (PEFT 0.21.2, quoted in expected.json["algorithm"]):
  1. Covariance (calib_cov_distribution): a forward hook on every targeted nn.Linear takes X = input[0].squeeze(0)
     (T×in for a batch of one; with batch > 1 squeeze(0) is a no-op and `input.t()` raises, so PEFT's hook only
     works with batch size 1 — padding would only matter if you pad a batch-of-one sequence: the hook ignores the
     attention mask, so padded positions would be counted). X is cast to float32, divided by |max(X)| (the signed
     maximum element, then abs — NOT max|x|), then C += Xᵀ X and sample_count += 1 per hook call (= per forward).
     After run_model, C /= sample_count. So C = (1/S) Σ_s X_sᵀ X_s / max(X_s)², summed over tokens, averaged over
     forward calls. Modules sharing an input (query/value, q_proj/v_proj) get identical C.
  2. Eigens (collect_eigens_for_layer), float32 throughout: W (out×in, float32); damp = 0.01; loop:
     C̃ = C + damp·mean(diag C)·I; C̃⁻¹ = inv(C̃); if ‖C̃·C̃⁻¹ − I‖_F < 0.05 stop else damp *= 2.
     The damping is ALWAYS added (at least 1 %). Then U, S, Vh = svd(W·C̃) (thin); V = (Vh·C̃⁻¹)ᵀ (in×min_dim).
  3. Crop: ipm keeps the r LARGEST components (S[:r], U[:, :r], V[:, :r]); kpm the r SMALLEST
     (S[-r:], U[:, -r:], V[:, -r:]), in the SVD's descending order (so kpm's S is descending too, the last being
     the smallest singular value).
  4. corda_init: scaling = lora_alpha / r (lora_alpha/√r with use_rslora); S' = S / scaling;
     A = diag(√S')·Vᵀ (r×in); B = U·diag(√S') (out×r); W_res = W − scaling·B·A, written back (in the weight's
     dtype) as the base weight. scaling·B·A = U_r·diag(S_r)·Vh_r·C̃⁻¹, i.e. the rank-r part of (W·C̃)·C̃⁻¹ = W.
  SVD signs are arbitrary: (U_i, V_i) → (−U_i, −V_i) flips row i of A and column i of B together and leaves B·A
  unchanged; compare B·A, or A/B after aligning signs per component.

PEFT 0.21.2's corda.py does `from attr import dataclass` (the attrs package, not a declared PEFT dependency);
when attrs is missing the script registers a stand-in `attr` module whose dataclass is dataclasses.dataclass
(CordaEigens is a plain three-field record, so this is exact).

  make-corda-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import copy, json, os, shutil, sys, tempfile
import torch
from torch import nn
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
import peft

try:
    import attr  # noqa: F401 — peft/tuners/lora/corda.py does `from attr import dataclass` (the attrs package),
except ImportError:  # which PEFT does not declare as a dependency; the peer venv lacks it. CordaEigens is a
    import dataclasses, types  # plain 3-field record, so the stdlib dataclass is an exact stand-in.
    sys.modules["attr"] = types.SimpleNamespace(dataclass=dataclasses.dataclass)
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda, target_modules

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")
tmp = tempfile.mkdtemp(prefix="corda-ref-")

API_SEQUENCE = [
    "lora_config = LoraConfig(r=4, lora_alpha=8, target_modules=[...], init_lora_weights='corda', "
    "corda_config=CordaConfig(corda_method='ipm' | 'kpm', cache_file=None, covariance_file=None))",
    "model.eval()  # base model, NOT yet wrapped",
    "preprocess_corda(model, lora_config, run_model=run_model)  # run_model(): for each text: "
    "model(input_ids=ids[None], attention_mask=ones) under torch.no_grad (preprocess_corda is @torch.no_grad)",
    "peft_model = get_peft_model(model, lora_config)  # LoraLayer.update_layer → corda_init reads module.eigens",
]

ALGORITHM = {
    "source": "peft %s: peft/tuners/lora/corda.py and peft/tuners/lora/layer.py (LoraLayer.corda_init)" % peft.__version__,
    "targets": {
        "quote": [
            "if LoraModel._check_target_module_exists(config, name) and isinstance(module, (nn.Linear, Conv1D)):",
        ],
        "note": "Same matching as get_peft_model (suffix match, layers_to_transform honoured), on the un-wrapped "
                "model's module names; only nn.Linear / Conv1D.",
    },
    "covariance_hook": {
        "quote": [
            "input = input[0].detach().squeeze(0).data  ## (context_length = 2048, dim)",
            "if not config.corda_config.use_float16_for_covariance:",
            "    input = input.float()",
            "input = input / torch.max(input).abs()",
            "covariance = input.t().matmul(input)",
            "module.sample_count += 1",
            "module.covariance_matrix += covariance",
        ],
        "after_run_model": ["module.covariance_matrix /= module.sample_count"],
        "note": "Per hook call (one forward of a batch of ONE sequence): X (T x in) = module input, float32; "
                "X /= abs(max(X)) where max is the signed maximum over all elements (torch.max(input) with no dim), "
                "not max|x|; C += X^T X (sum over tokens, no centering); sample_count += 1. "
                "Finally C /= sample_count (number of forward calls, not tokens). "
                "Batch > 1: squeeze(0) keeps the batch dim and input.t() raises 't() expects a tensor with <= 2 "
                "dimensions', so calibration must be one sequence per forward. The attention mask is not used by "
                "the hook: unpadded single sequences (as here) make it irrelevant; pad tokens in a batch-of-one "
                "would be counted. hooked_model.eval() is called before run_model.",
    },
    "eigens": {
        "quote": [
            "w = linear.weight.data.float()",
            "covariance_matrix = linear.covariance_matrix.float()",
            "damp = 0.01",
            "while True:",
            "    compensate = torch.diag(torch.ones(covariance_matrix.size(0)).to(covariance_matrix.device) "
            "* torch.mean(torch.diag(covariance_matrix)) * damp)",
            "    fix_covariance_matrix = covariance_matrix + compensate",
            "    cov_inv = torch.linalg.inv(fix_covariance_matrix)",
            "    inv_error = torch.dist(fix_covariance_matrix @ cov_inv, torch.eye(covariance_matrix.size(0))"
            ".to(get_model_device(linear))).item()",
            "    if inv_error < 0.05:",
            "        break",
            "    else:",
            "        damp = damp * 2",
            "w = w @ fix_covariance_matrix  ## w: out_dim, in_dim; covariance_matrix: in_dim, in_dim",
            "U, S, Vh = torch.linalg.svd(w, full_matrices=False)",
            "V = (Vh @ cov_inv).transpose(0, 1)",
        ],
        "note": "All float32 (no float64 anywhere in PEFT's CorDA). torch.dist = Frobenius norm of the difference. "
                "Damping is always applied: C~ = C + damp*mean(diag(C))*I with damp = 0.01, doubled until "
                "||C~ C~^-1 - I||_F < 0.05 (the damp PEFT used per module is in modules[*].damp). "
                "SVD of W*C~ (out x in), thin; V = (Vh C~^-1)^T, in x min(out,in) — V is NOT orthonormal.",
    },
    "crop": {
        "quote": [
            'if module.corda_method == "ipm":',
            "    module.eigens.S_WC = module.eigens.S_WC[: module.rank].clone()",
            "    module.eigens.U_WC = module.eigens.U_WC[:, : module.rank].clone()...",
            "    module.eigens.V_WC = module.eigens.V_WC[:, : module.rank].clone()...",
            'elif module.corda_method == "kpm":',
            "    module.eigens.S_WC = module.eigens.S_WC[-module.rank :].clone()",
            "    module.eigens.U_WC = module.eigens.U_WC[:, -module.rank :].clone()...",
            "    module.eigens.V_WC = module.eigens.V_WC[:, -module.rank :].clone()...",
        ],
        "note": "ipm = r largest singular components, kpm = r smallest (kept in the SVD's descending order). "
                "module.rank = rank_pattern match or r.",
    },
    "corda_init": {
        "quote": [
            "weight = weight.to(torch.float32)",
            "U = eigens.U_WC; S = eigens.S_WC; V = eigens.V_WC; r = self.r[adapter_name]",
            "# Apply alpha",
            "S /= self.scaling[adapter_name]",
            "lora_A = V.t().mul(S.sqrt().view(-1, 1)).contiguous()",
            "lora_B = U.mul(S.sqrt()).contiguous()",
            "delta = self.scaling[adapter_name] * lora_B @ lora_A",
            "delta = transpose(delta, fan_in_fan_out=self.fan_in_fan_out)",
            "weight = weight.data - delta",
            "weight = weight.to(dtype)",
            "self.get_base_layer().weight.data = weight",
        ],
        "scaling_quote": ["self.scaling[adapter_name] = lora_alpha / r  # (lora_alpha / math.sqrt(r) if use_rslora)"],
        "note": "scaling = lora_alpha/r = 2 here. S' = S/scaling; A = diag(sqrt(S')) V^T (r x in); "
                "B = U diag(sqrt(S')) (out x r); W_res = W - scaling*B*A. So scaling*B*A = U diag(S) V^T = "
                "U_r S_r Vh_r C~^-1 and the adapted layer W_res x + scaling*B*A x = W x. The division S /= scaling "
                "is in place on module.eigens.S_WC (the base layer keeps .eigens after init). "
                "Weight must be float32/float16/bfloat16 (else TypeError). Bias untouched.",
    },
    "options": {
        "cache_file": "If set and the file exists and is non-empty, preprocess_corda skips everything and loads "
                      "torch.load(cache_file) = {f'{name}.eigens.S_WC', '.U_WC', '.V_WC'} (already cropped to r, "
                      "S not yet divided by scaling); otherwise after building it saves that dict there.",
        "covariance_file": "If set and exists, calib_cov_distribution loads {name: C} (already divided by "
                           "sample_count) instead of running the model (run_model may then be None); otherwise "
                           "after computing it saves that dict. A covariance file can be reused with other r / method.",
        "use_float16_for_covariance": "False by default: hook input cast to float32. True keeps the input dtype.",
        "prune_temporary_fields": "True by default: deletes module.sample_count, covariance_matrix, corda_method, "
                                  "rank after preprocessing (eigens are kept).",
        "hooked_model": "Optional other model to hook while run_model runs; its covariances are copied by name.",
        "corda_method": "'ipm' (default) or 'kpm'; required when no cache_file.",
    },
}


def linear_modules(model, cfg):
    return [(n, m) for n, m in target_modules(model, cfg)]


def collect_inputs(model, cfg, run_model):
    """Own hooks: the float64 per-sample Xᵀ X / max(X)² (an independent copy of PEFT's hook)."""
    acc, cnt, hs = {}, {}, []
    for name, mod in linear_modules(model, cfg):
        def hook(m, inp, out, name=name):
            x = inp[0].detach()
            assert x.dim() == 3 and x.size(0) == 1
            x = x[0].double()
            x = x / x.max().abs()
            acc[name] = acc.get(name, 0) + x.t() @ x
            cnt[name] = cnt.get(name, 0) + 1
        hs.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        run_model()
    for h in hs: h.remove()
    return {n: acc[n] / cnt[n] for n in acc}, cnt


def reimplement64(w, cov, rank, method, scaling):
    """The algorithm as described, in float64, with PEFT's damping loop."""
    w = w.double(); cov = cov.double()
    n = cov.size(0)
    damp = 0.01
    while True:
        fix = cov + torch.eye(n, dtype=torch.float64) * cov.diag().mean() * damp
        inv = torch.linalg.inv(fix)
        if torch.dist(fix @ inv, torch.eye(n, dtype=torch.float64)).item() < 0.05: break
        damp *= 2
    U, S, Vh = torch.linalg.svd(w @ fix, full_matrices=False)
    V = (Vh @ inv).t()
    sl = slice(0, rank) if method == "ipm" else slice(S.numel() - rank, S.numel())
    U, S, V = U[:, sl], S[sl], V[:, sl]
    Sp = S / scaling
    A = V.t() * Sp.sqrt().view(-1, 1)
    B = U * Sp.sqrt()
    return A, B, w - scaling * B @ A, S, damp


def canonical_signs(a, b):
    """Deterministic SVD sign convention for the float64 references: in each column of B (= a column of U times
    √S'), the entry of largest magnitude (first one on ties) is made positive; row i of A flips with column i of B."""
    idx = b.abs().argmax(0)
    s = torch.sign(b[idx, torch.arange(b.size(1))])
    s[s == 0] = 1
    return a * s.view(-1, 1), b * s


def replay32(w, cov, rank, method, scaling):
    """The algorithm as described, in float32 with the same torch calls (should reproduce PEFT bit for bit)."""
    n = cov.size(0); damp = 0.01
    while True:
        fix = cov + torch.diag(torch.ones(n) * torch.mean(torch.diag(cov)) * damp)
        inv = torch.linalg.inv(fix)
        if torch.dist(fix @ inv, torch.eye(n)).item() < 0.05: break
        damp *= 2
    U, S, Vh = torch.linalg.svd(w @ fix, full_matrices=False)
    V = (Vh @ inv).t()
    sl = slice(0, rank) if method == "ipm" else slice(S.numel() - rank, S.numel())
    U, S, V = U[:, sl], S[sl] / scaling, V[:, sl]
    A = V.t().mul(S.sqrt().view(-1, 1)); B = U.mul(S.sqrt())
    return A, B, w - scaling * B @ A


def peft_damp(w, cov):
    """Replays PEFT's float32 damping loop to report the damp it ended with and the final inverse error."""
    cov = cov.float(); n = cov.size(0)
    damp = 0.01
    while True:
        fix = cov + torch.diag(torch.ones(n) * torch.mean(torch.diag(cov)) * damp)
        inv = torch.linalg.inv(fix)
        err = torch.dist(fix @ inv, torch.eye(n)).item()
        if err < 0.05: return damp, err
        damp *= 2


def align(a64, b64, a, b):
    """Flip signs of the float64 components to match PEFT's, then max abs diffs of A and B."""
    s = torch.sign((a64 * a.double()).sum(1))
    s[s == 0] = 1
    return (a64 * s.view(-1, 1) - a.double()).abs().max().item(), (b64 * s - b.double()).abs().max().item()


def build(name, model, tok_ids, texts, cfg, run_one, out_fn, residual_for, covariance_for, extra):
    out = os.path.join(models, name)
    os.makedirs(out, exist_ok=True)
    model.eval()

    def run_model():
        for ids in tok_ids:
            run_one(model, ids)

    originals = {n: m.weight.detach().clone() for n, m in linear_modules(model, cfg)}
    with torch.no_grad():
        ref_out = [out_fn(model, ids) for ids in tok_ids]
    cov64, counts = collect_inputs(model, cfg, run_model)

    # The PEFT path; covariance_file / cache_file in a temp dir so both can be inspected (results unchanged).
    cfg = copy.deepcopy(cfg)
    cfg.corda_config.covariance_file = os.path.join(tmp, name, "covariance.pt")
    cfg.corda_config.cache_file = os.path.join(tmp, name, "cache.pt")
    preprocess_corda(model, cfg, run_model=run_model)
    covs = torch.load(cfg.corda_config.covariance_file)
    cache = torch.load(cfg.corda_config.cache_file)
    pm = get_peft_model(model, cfg)
    pm.eval()
    with torch.no_grad():
        new_out = [out_fn(pm, ids) for ids in tok_ids]
    fn_diff = max((a - b).abs().max().item() for a, b in zip(ref_out, new_out))
    fn_scale = max(a.abs().max().item() for a in ref_out)

    tensors, mods, checks = {}, {}, {"function_max_abs_diff": fn_diff, "function_max_abs_value": fn_scale}
    worst = {"cov_rel": 0.0, "delta_abs": 0.0, "delta_rel": 0.0, "A_abs": 0.0, "B_abs": 0.0, "residual_identity": 0.0}
    for mname in originals:
        layer = pm.base_model.model.get_submodule(mname)
        A = layer.lora_A["default"].weight.detach().clone().contiguous()
        B = layer.lora_B["default"].weight.detach().clone().contiguous()
        Wres = layer.base_layer.weight.detach().clone().contiguous()
        scaling = layer.scaling["default"]
        W = originals[mname]
        S_kept = cache[f"{mname}.eigens.S_WC"].detach().clone()  # cropped, before S /= scaling
        tensors[f"{mname}.lora_A"] = A
        tensors[f"{mname}.lora_B"] = B
        tensors[f"{mname}.singular_values"] = S_kept.float().contiguous()
        if mname in residual_for:
            tensors[f"{mname}.weight_residual"] = Wres
        if mname in covariance_for:
            tensors[f"{mname}.covariance"] = covs[mname].float().contiguous()
        ident = (Wres + scaling * B @ A - W).abs().max().item()
        cov = covs[mname]
        cov_rel = ((cov.double() - cov64[mname]).abs().max() / cov64[mname].abs().max()).item()
        damp, inv_err = peft_damp(W, cov)
        # float64 from PEFT's own (float32) covariance and the float32 weight — what a port fed the stored
        # covariance would compute; differences to PEFT are then PEFT's float32 inverse/SVD rounding only.
        a64, b64, wres64, s64, damp64 = reimplement64(W, cov, A.size(0), cfg.corda_config.corda_method, scaling)
        if mname in covariance_for:
            ca, cb = canonical_signs(a64, b64)
            tensors[f"{mname}.lora_A_f64"] = ca.float().contiguous()
            tensors[f"{mname}.lora_B_f64"] = cb.float().contiguous()
        delta = scaling * B.double() @ A.double()
        delta64 = scaling * b64 @ a64
        d_abs = (delta - delta64).abs().max().item()
        d_rel = d_abs / delta64.abs().max().item()
        a_abs, b_abs = align(a64, b64, A, B)
        ra, rb, rw = replay32(W, cov.float(), A.size(0), cfg.corda_config.corda_method, scaling)
        replay = max((ra - A).abs().max().item(), (rb - B).abs().max().item(), (rw - Wres).abs().max().item())
        worst["float32_replay_max_abs_diff"] = max(worst.get("float32_replay_max_abs_diff", 0.0), replay)
        worst["cov_rel"] = max(worst["cov_rel"], cov_rel)
        worst["delta_abs"] = max(worst["delta_abs"], d_abs)
        worst["delta_rel"] = max(worst["delta_rel"], d_rel)
        worst["A_abs"] = max(worst["A_abs"], a_abs)
        worst["B_abs"] = max(worst["B_abs"], b_abs)
        worst["residual_identity"] = max(worst["residual_identity"], ident)
        mods[mname] = {
            "weight_shape": list(W.shape), "lora_A_shape": list(A.shape), "lora_B_shape": list(B.shape),
            "scaling": scaling, "sample_count": counts[mname],
            "damp": damp, "inverse_error": inv_err, "damp_float64": damp64,
            "singular_values_kept": S_kept.tolist(), "singular_values_kept_float64": s64.tolist(),
            "max_abs_A": A.abs().max().item(), "max_abs_B": B.abs().max().item(),
            "max_abs_delta": delta.abs().max().item(),
            "max_abs_weight_minus_residual": (W - Wres).abs().max().item(),
            "residual_identity_max_abs": ident,
            "float64_check": {"covariance_max_rel_diff_own_float64_hooks_vs_peft": cov_rel, "delta_max_abs_diff": d_abs,
                              "delta_max_rel_diff": d_rel, "A_max_abs_diff_sign_aligned": a_abs,
                              "B_max_abs_diff_sign_aligned": b_abs},
            "stored": [k.split(mname + ".")[1] for k in tensors if k.startswith(mname + ".")],
        }
    checks["float64_reimplementation_worst"] = worst
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    json.dump({"texts": texts, "input_ids": tok_ids,
               "note": "each text is one forward pass with batch size 1, no padding, attention mask all ones"},
              open(os.path.join(out, "batch.json"), "w"), indent=1)
    c = cfg.corda_config
    expected = {
        "peft_version": peft.__version__,
        "lora_config": {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules),
                        "layers_to_transform": cfg.layers_to_transform, "use_rslora": cfg.use_rslora,
                        "init_lora_weights": cfg.init_lora_weights, "lora_dropout": cfg.lora_dropout},
        "corda_config": {"corda_method": c.corda_method, "use_float16_for_covariance": c.use_float16_for_covariance,
                         "prune_temporary_fields": c.prune_temporary_fields,
                         "cache_file": "set to a temp file by the script (results identical to None)",
                         "covariance_file": "set to a temp file by the script (results identical to None)"},
        "modules": mods,
        "tensor_names": sorted(tensors),
        "api_sequence": API_SEQUENCE,
        "algorithm": ALGORITHM,
        "checks": checks,
        **extra,
    }
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
    print(name, json.dumps(checks))
    return pm


# ---- MiniLM ----
MINILM_TEXTS = [
    "the cat sat on the mat",
    "stock prices fell sharply today",
    "please translate this sentence into french",
    "rain is expected over the weekend",
]
tok = AutoTokenizer.from_pretrained(minilm_dir)
minilm_ids = [tok(t)["input_ids"] for t in MINILM_TEXTS]  # [CLS] ... [SEP], unpadded


def minilm_run(model, ids):
    x = torch.tensor([ids])
    return model(input_ids=x, attention_mask=torch.ones_like(x))


def minilm_out(model, ids):
    return minilm_run(model, ids).last_hidden_state[0]


MINILM_EXTRA = {"model": "all-MiniLM-L6-v2 as transformers BertModel (AutoModel), float32; output compared = "
                         "last_hidden_state",
                "tokenization": "AutoTokenizer(minilm folder)(text)['input_ids'] — [CLS]=101 ... [SEP]=102, no padding"}

for method, name, residual_for, covariance_for in [
    ("ipm", "corda-minilm", ["encoder.layer.0.attention.self.query", "encoder.layer.5.attention.self.value"],
     ["encoder.layer.0.attention.self.query"]),
    ("kpm", "corda-minilm-kpm", ["encoder.layer.0.attention.self.query"], ["encoder.layer.0.attention.self.query"]),
]:
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(minilm_dir, torch_dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                     init_lora_weights="corda", corda_config=CordaConfig(corda_method=method))
    build(name, model, minilm_ids, MINILM_TEXTS, cfg, minilm_run, minilm_out, residual_for, covariance_for,
          MINILM_EXTRA)
    del model

# ---- SmolLM2 ----
SMOL_TEXTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    "<|im_start|>user\nName a primary colour.<|im_end|>\n<|im_start|>assistant\nBlue is one.<|im_end|>\n",
]
d, f = os.path.split(smollm2_gguf)
stok = AutoTokenizer.from_pretrained(d, gguf_file=f)
smol_ids = [stok(t)["input_ids"] for t in SMOL_TEXTS]


def smol_run(model, ids):
    return model(input_ids=torch.tensor([ids]), use_cache=False)


def smol_out(model, ids):
    return smol_run(model, ids).logits[0]


torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 29],
                 lora_dropout=0.0, task_type="CAUSAL_LM", init_lora_weights="corda",
                 corda_config=CordaConfig(corda_method="ipm"))
build("corda-smollm2", model, smol_ids, SMOL_TEXTS, cfg, smol_run, smol_out,
      ["model.layers.29.self_attn.v_proj"], ["model.layers.29.self_attn.v_proj"],
      {"model": "SmolLM2-135M-Instruct Q4_1 GGUF loaded by transformers (gguf_file=, dequantised, float32); output "
                "compared = logits",
       "tokenization": "AutoTokenizer(gguf)(text)['input_ids'] on the literal ChatML strings (no system prompt, "
                       "no chat template applied, no BOS added by this tokenizer — see the ids), no padding"})
shutil.rmtree(tmp)  # the covariance_file / cache_file were only inspected
print("done")
