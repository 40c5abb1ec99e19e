#!/usr/bin/env python3
"""Makes five bottleneck-adapter fixtures under Tests/Fixtures/reference/models/ with AdapterHub `adapters` 1.3.0
(transformers 4.57): serial Pfeiffer (SeqBnConfig), serial Houlsby (DoubleSeqBnConfig) and parallel He et al.
(ParBnConfig). Each folder holds the adapter as AdapterHub's model.save_adapter(dir, "task", use_safetensors=True)
writes it, batch.json (copied from the shared grad-* batch), expected.json (loss, logits, notes) and
grads.safetensors (d loss / d every trainable tensor, named as in the saved files). Dropout off (model.eval()).

  bottleneck-minilm-seqbn:   the grad-minilm-seqcls batch, all-MiniLM-L6-v2 BertForSequenceClassification (3 labels),
                             SeqBnConfig(reduction_factor=16): one adapter per layer after the FFN, 384 -> 24 -> 384.
  bottleneck-minilm-houlsby: same batch, DoubleSeqBnConfig(reduction_factor=16): two adapters per layer (after the
                             attention output and after the FFN).
  bottleneck-minilm-parbn:   same batch, ParBnConfig(reduction_factor=16): one parallel adapter per layer beside the FFN.
  bottleneck-smollm2-seqbn:  the grad-smollm2-lora batch, SmolLM2-135M (LlamaForCausalLM, GGUF dequantized to float32),
                             SeqBnConfig(reduction_factor=16, leave_out=[0..27]): adapters on layers 28 and 29 only,
                             576 -> 36 -> 576 (all 30 layers would be 5 MB of weights + 5 MB of grads).
  bottleneck-smollm2-parbn:  same, ParBnConfig(reduction_factor=16, leave_out=[0..27]).

Files in every folder:
  adapter_config.json     AdapterHub's: {"config": {...every BnConfig field...}, "hidden_size", "model_class",
                          "model_name", "model_type", "name": "task", "version": "adapters.1.3.0"}. config has no
                          "architecture" key: AdapterConfig._get_config_class maps a missing architecture to BnConfig.
  adapter.safetensors     AdapterHub's safetensors name (SAFE_WEIGHTS_NAME); without use_safetensors it writes the
                          same state dict as the torch pickle pytorch_adapter.bin, and load_adapter reads
                          adapter.safetensors only when called with use_safetensors=True (else pytorch_adapter.bin).
                          Tensor names (full model state-dict names, prefix bert. / model.):
                            BERT  bert.encoder.layer.{i}.attention.output.adapters.task.{T}   (mh_adapter, Houlsby only)
                                  bert.encoder.layer.{i}.output.adapters.task.{T}             (output_adapter)
                            Llama model.layers.{i}.attention_adapters.adapters.task.{T}       (mh_adapter)
                                  model.layers.{i}.output_adapters.adapters.task.{T}          (output_adapter)
                          T in adapter_down.0.weight [r, H], adapter_down.0.bias [r], adapter_up.weight [H, r],
                          adapter_up.bias [H]; r = int(H // reduction_factor). (adapter_down is nn.Sequential(Linear,
                          activation), hence the ".0".) No other tensors for these configs (scaling is a float,
                          no ln_before/ln_after/gating/phm).
  head_config.json,       MiniLM only: the static HF head (classifier, Linear 384 -> 3) that save_adapter's
  model_head.safetensors  PredictionHeadLoader writes for a non-flex-head model: tensors classifier.weight [3, 384],
                          classifier.bias [3]; head_config.json = {"config": null, "hidden_size", "label2id",
                          "model_class", "model_name", "model_type", "name": null, "num_labels": 3, "version"}.
                          SmolLM2 is saved with with_head=False (the head would be lm_head.weight, 113 MB).
  grads.safetensors       d loss / d every adapter tensor under its adapter.safetensors name, plus (MiniLM)
                          classifier.weight and classifier.bias (the head is trainable: train_adapter freezes only the
                          base model, and the script sets the classifier trainable explicitly).
  expected.json           loss; MiniLM: logits [3][3]; SmolLM2: logits_last (first 2048 vocab logits at each
                          sequence's last real position, [2][2048], shortest float32 text) and last_positions;
                          notes (the math below), config, tensor shapes, checks.

Every adapter tensor is moved off AdapterHub's init (p += 0.05 * N(0,1), seeded, names in sorted order) so outputs and
gradients are non-trivial (ParBn's mam_adapter init zeroes adapter_up, so without it the adapter is exactly off).

The math, as read from adapters 1.3.0 (methods/modeling.py Adapter/ParallelAdapter, methods/bottleneck.py
BottleneckLayer.bottleneck_layer_forward, models/bert/modeling_bert.py, models/llama/modeling_llama.py):

  Bottleneck  f(x) = scaling * (W_up act(W_down x + b_down) + b_up)           (Adapter.forward / ParallelAdapter.forward:
              down = self.adapter_down(x); up = self.adapter_up(down); up = up * self.scaling; output = self.dropout(up))
              act: "relu" = ReLU (SeqBn, ParBn); "swish" = SiLU x*sigmoid(x) (DoubleSeqBn). scaling 1.0 (SeqBn,
              DoubleSeqBn), 4.0 (ParBn). dropout 0.0. (get_activation("swish") is nn.SiLU.)

  Call site   BERT  BertSelfOutput / BertOutput: h = dropout(dense(x)); out = bottleneck_layer_forward(h, input_tensor,
              self.LayerNorm)  — h = sublayer output before residual and LayerNorm, input_tensor = the sublayer's input
              (the residual), LN = that sublayer's own LayerNorm (attention.output.LayerNorm / output.LayerNorm).
              Llama LlamaDecoderLayerWithAdapters: residual = X; h = self_attn(input_layernorm(X));
              h = self.attention_adapters(h, residual, None); residual = h; h = mlp(post_attention_layernorm(h));
              h = self.output_adapters(h, residual, None)  — layer_norm None: residual adds only, no norm.
              Without an adapter at that location (location off, or layer in leave_out) the layer falls back to
              LN(h + residual) (BERT) / h + residual (Llama): the unadapted model.

  Serial (Adapter): pre_forward:  residual = h (residual_before_ln True); if original_ln_before:
              x = LN(h + input_tensor) (Llama: x = h + input_tensor) else x = h.
              forward: out = f(x) + residual (ln_after False, adapter_residual_before_ln False).
              post_forward (original_ln_after True): y = LN(out + input_tensor) (Llama: out + input_tensor).
     SeqBn (original_ln_before True): BERT  y = LN(h + r + f(LN(h + r)))      (the same LN module applied twice)
                                      Llama y = (h + r) + f(h + r)
     DoubleSeqBn (original_ln_before False): BERT y = LN(h + r + f(h)); Llama y = h + r + f(h)  (at both locations)
  Parallel (ParallelAdapter): pre_forward returns (input_tensor, query, input_tensor): the adapter input is the
              sublayer's input r; forward: out = f(r) (no residual inside); post_forward:
              hidden = out + input_hidden_states (= h), then y = LN(hidden + input_tensor) / hidden + input_tensor.
     ParBn (output_adapter only):   BERT  y = LN(h + r + 4 f(r))   with r = the attention block output (FFN input)
                                    Llama y = h + r + 4 f(r)       with r = the residual stream Z BEFORE
                                    post_attention_layernorm (not the RMS-normed FFN input)

Every fixture is checked three ways: (1) an independent forward written from these formulas on a plain transformers
model (no adapters.init) with the saved tensors reproduces AdapterHub's loss, logits and all gradients; (2) a fresh
model + adapters.init + load_adapter(folder, use_safetensors=True, set_active=True) reproduces the logits; (3) the
gradients cover exactly the trainable parameters.

  make-bottleneck-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the AdapterHub environment's Python (adapters 1.3.0, transformers 4.57, gguf)."""
import copy, json, math, os, shutil, sys
import numpy as np
import torch
import torch.nn.functional as F
import adapters
from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")
PERTURB = 0.05

MATH = {
    "bottleneck": "f(x) = scaling * (adapter_up.weight @ act(adapter_down.0.weight @ x + adapter_down.0.bias) + "
                  "adapter_up.bias); r_dim = int(hidden_size // reduction_factor); dropout 0.0",
    "activation": "non_linearity 'relu' = max(x, 0); 'swish' = SiLU x*sigmoid(x) (transformers get_activation)",
    "bert_call_site": "BertSelfOutput/BertOutput: h = dropout(dense(x)); y = bottleneck_layer_forward(h, input_tensor, "
                      "LayerNorm) where input_tensor r is the sublayer input and LN that sublayer's own LayerNorm; "
                      "unadapted: y = LN(h + r)",
    "llama_call_site": "LlamaDecoderLayerWithAdapters: r = X; h = self_attn(input_layernorm(X)); "
                       "Z = attention_adapters(h, r, None); h = mlp(post_attention_layernorm(Z)); "
                       "Y = output_adapters(h, Z, None); layer_norm None so only residual adds; unadapted: h + r",
    "serial": "Adapter: residual = h (residual_before_ln True); x = LN(h + r) if original_ln_before (Llama: h + r) "
              "else h; out = f(x) + residual; y = LN(out + r) (original_ln_after; Llama: out + r)",
    "seq_bn": "BERT y = LN(h + r + f(LN(h + r))) (same LN applied twice); Llama y = (h + r) + f(h + r); "
              "output_adapter only; relu; scaling 1",
    "double_seq_bn": "BERT y = LN(h + r + f(h)); Llama y = h + r + f(h); at mh_adapter (attention output) and "
                     "output_adapter (FFN output), separate weights; swish; scaling 1",
    "parallel": "ParallelAdapter: adapter input = r (pre_forward returns input_tensor); out = f(r); "
                "y = LN(out + h + r) (Llama: out + h + r)",
    "par_bn": "BERT y = LN(h + r + 4 f(r)), r = attention block output (FFN input); Llama y = h + Z + 4 f(Z), "
              "Z = residual stream before post_attention_layernorm; output_adapter only; relu; scaling 4.0; "
              "init mam_adapter (down kaiming_uniform a=sqrt(5), biases 0, up weight 0)",
    "init": "bert: every Linear N(0, 0.02), bias 0 (SeqBn, DoubleSeqBn); mam_adapter (ParBn): see par_bn; "
            "this fixture adds 0.05*N(0,1) to every adapter tensor afterwards",
    "saved_names": "BERT bert.encoder.layer.{i}.attention.output.adapters.task.* (mh) / "
                   "bert.encoder.layer.{i}.output.adapters.task.* (output); Llama model.layers.{i}.attention_adapters."
                   "adapters.task.* / model.layers.{i}.output_adapters.adapters.task.*; * in adapter_down.0.weight "
                   "[r_dim, H], adapter_down.0.bias [r_dim], adapter_up.weight [H, r_dim], adapter_up.bias [H]",
    "files": "adapter_config.json + adapter.safetensors (save_adapter use_safetensors=True; default is the torch "
             "pickle pytorch_adapter.bin with the same names); MiniLM also head_config.json + model_head.safetensors "
             "(classifier.weight [3,384], classifier.bias [3]); load_adapter(dir, use_safetensors=True) reads them",
}


def short_floats(t):
    """Nested lists of t's float32 values, each in its shortest text that reads back as the same float32."""
    return [short_floats(r) for r in t] if t.dim() > 1 else [float(str(np.float32(x))) for x in t.tolist()]


def perturb(m):
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in sorted(m.named_parameters()):
            if ".adapters.task." in n:
                p.add_(PERTURB * torch.randn_like(p))


def act(name):
    return {"relu": F.relu, "swish": F.silu}[name]


def bottleneck(P, prefix, x, cfg):
    """f(x) from the saved tensors under prefix (…adapters.task.)."""
    down = act(cfg["non_linearity"])(F.linear(x, P[prefix + "adapter_down.0.weight"], P[prefix + "adapter_down.0.bias"]))
    return cfg["scaling"] * F.linear(down, P[prefix + "adapter_up.weight"], P[prefix + "adapter_up.bias"])


def adapted(P, prefix, h, r, LN, cfg):
    """The formulas of the docstring: y for sublayer output h, sublayer input r and LayerNorm LN (None for Llama)."""
    ln = LN if LN is not None else (lambda t: t)
    if prefix + "adapter_up.weight" not in P:
        return ln(h + r)  # no adapter here
    if cfg["is_parallel"]:
        return ln(h + r + bottleneck(P, prefix, r, cfg))
    if cfg["original_ln_before"]:  # SeqBn
        return ln(h + r + bottleneck(P, prefix, ln(h + r), cfg))
    return ln(h + r + bottleneck(P, prefix, h, cfg))  # DoubleSeqBn


def leaves(out, files):
    """The saved tensors as fresh leaves that need grad."""
    P = {}
    for f in files:
        for k, v in load_file(os.path.join(out, f)).items():
            P[k] = v.clone().requires_grad_(True)
    return P


def compare_grads(P, grads, what):
    worst = 0.0
    for k, g in grads.items():
        assert P[k].grad is not None, k
        scale = g.abs().max().item()
        err = (P[k].grad - g).abs().max().item()
        assert err <= 1e-4 * max(scale, 1e-3), (what, k, err, scale)
        worst = max(worst, err / max(scale, 1e-3))
    print(what, "independent grads match, worst relative", worst)
    return worst


def collect_grads(m, out, files):
    names = [k for f in files for k in load_file(os.path.join(out, f)).keys()]
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    assert set(names) == set(params), (sorted(set(names) ^ set(params)))[:8]  # saved names == live names
    grads = {n: params[n].grad.detach().clone().contiguous() for n in names}
    assert all(g.abs().sum() > 0 for g in grads.values())
    save_file(grads, os.path.join(out, "grads.safetensors"))
    return grads


def publish(out):
    """save_file writes 0600; make the fixture files world-readable like the others."""
    for f in os.listdir(out):
        os.chmod(os.path.join(out, f), 0o644)


def describe(out, files):
    shapes = {}
    for f in files:
        for k, v in load_file(os.path.join(out, f)).items():
            shapes[k] = list(v.shape)
    return dict(sorted(shapes.items()))


# --------------------------------------------------------------------------------------------------------------------
# MiniLM (BERT) sequence classification

def bert_manual(plain, P, cfg, ids, mask, labels):
    """BertForSequenceClassification forward written out, with the adapter formulas; eval mode (no dropout)."""
    bert = plain.bert
    heads = plain.config.num_attention_heads
    x = bert.embeddings(input_ids=ids)
    B, T, H = x.shape
    d = H // heads
    add_mask = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i, L in enumerate(bert.encoder.layer):
        s = L.attention.self
        split = lambda t: t.view(B, T, heads, d).transpose(1, 2)
        q, k, v = split(s.query(x)), split(s.key(x)), split(s.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + add_mask, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, H)
        h = L.attention.output.dense(ctx)
        a = adapted(P, f"bert.encoder.layer.{i}.attention.output.adapters.task.", h, x,
                    L.attention.output.LayerNorm, cfg)
        h = L.output.dense(L.intermediate(a))
        x = adapted(P, f"bert.encoder.layer.{i}.output.adapters.task.", h, a, L.output.LayerNorm, cfg)
    pooled = bert.pooler(x)
    logits = F.linear(pooled, P["classifier.weight"], P["classifier.bias"])
    return F.cross_entropy(logits, labels), logits


def minilm(config, out_name, base):
    src = os.path.join(models, "grad-minilm-seqcls")
    out = os.path.join(models, out_name)
    if os.path.isdir(out): shutil.rmtree(out)
    os.makedirs(out)
    batch = json.load(open(os.path.join(src, "batch.json")))
    ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])

    m = copy.deepcopy(base)
    adapters.init(m)
    torch.manual_seed(0)
    m.add_adapter("task", config=config)
    m.train_adapter("task")
    m.classifier.requires_grad_(True)
    perturb(m)
    m.eval()
    assert str(m.active_adapters) == "Stack[task]", m.active_adapters
    res = m(input_ids=ids, attention_mask=mask, labels=labels)
    res.loss.backward()

    m.save_adapter(out, "task", use_safetensors=True)
    files = ["adapter.safetensors", "model_head.safetensors"]
    assert sorted(os.listdir(out)) == sorted(files + ["adapter_config.json", "head_config.json"]), os.listdir(out)
    grads = collect_grads(m, out, files)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))["config"]

    # (1) independent forward/backward from the formulas on the plain model
    P = leaves(out, files)
    plain = copy.deepcopy(base).eval()
    for p in plain.parameters(): p.requires_grad_(False)
    loss2, logits2 = bert_manual(plain, P, cfg, ids, mask, labels)
    loss2.backward()
    dl = (logits2 - res.logits).abs().max().item()
    assert dl < 1e-5 and abs(loss2.item() - res.loss.item()) < 1e-5, (dl, loss2.item(), res.loss.item())
    worst = compare_grads(P, grads, out_name)

    # (2) reload through AdapterHub
    again = copy.deepcopy(base).eval()
    adapters.init(again)
    again.load_adapter(out, use_safetensors=True, set_active=True)
    with torch.no_grad():
        dr = (again(input_ids=ids, attention_mask=mask).logits - res.logits).abs().max().item()
    assert dr < 1e-6, dr

    expected = {
        "loss": res.loss.item(), "logits": res.logits.detach().tolist(),
        "config_class": type(config).__name__, "reduction_factor": 16, "bottleneck_dim": 384 // 16,
        "perturbation": f"every adapter tensor += {PERTURB} * N(0,1) after AdapterHub's init (torch.manual_seed(1), "
                        "names sorted); classifier as initialised by transformers after torch.manual_seed(0)",
        "loss_reduction": "cross entropy, mean over the 3 sequences",
        "tensors": describe(out, files),
        "checks": {"independent_logits_max_abs_diff": dl, "independent_grads_worst_relative": worst,
                   "reload_logits_max_abs_diff": dr},
        "notes": MATH,
    }
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    publish(out)
    print("wrote", out, "loss", res.loss.item(), "adapter tensors", len(grads) - 2)


torch.manual_seed(0)
minilm_base = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)
minilm_base.config.name_or_path = "sentence-transformers/all-MiniLM-L6-v2"  # model_name in the saved configs
minilm_base.eval()
minilm(SeqBnConfig(reduction_factor=16), "bottleneck-minilm-seqbn", minilm_base)
minilm(DoubleSeqBnConfig(reduction_factor=16), "bottleneck-minilm-houlsby", minilm_base)
minilm(ParBnConfig(reduction_factor=16), "bottleneck-minilm-parbn", minilm_base)
del minilm_base


# --------------------------------------------------------------------------------------------------------------------
# SmolLM2 (Llama) causal LM

def llama_manual(plain, P, cfg):
    """Replace every decoder layer's forward by the formulas (layer_norm None: residual adds only)."""
    for i, L in enumerate(plain.model.layers):
        def fwd(hidden_states, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                cache_position=None, position_embeddings=None, _L=L, _i=i, **kw):
            r = hidden_states
            h, _ = _L.self_attn(hidden_states=_L.input_layernorm(r), attention_mask=attention_mask,
                                position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                                cache_position=cache_position, position_embeddings=position_embeddings, **kw)
            z = adapted(P, f"model.layers.{_i}.attention_adapters.adapters.task.", h, r, None, cfg)
            h = _L.mlp(_L.post_attention_layernorm(z))
            return adapted(P, f"model.layers.{_i}.output_adapters.adapters.task.", h, z, None, cfg)
        L.forward = fwd


def smollm2(config, out_name, base):
    src = os.path.join(models, "grad-smollm2-lora")
    out = os.path.join(models, out_name)
    if os.path.isdir(out): shutil.rmtree(out)
    os.makedirs(out)
    batch = json.load(open(os.path.join(src, "batch.json")))
    ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
    last = mask.sum(1) - 1

    m = copy.deepcopy(base)
    adapters.init(m)
    torch.manual_seed(0)
    m.add_adapter("task", config=config)
    m.train_adapter("task")
    perturb(m)
    m.eval()
    assert str(m.active_adapters) == "Stack[task]", m.active_adapters
    res = m(input_ids=ids, attention_mask=mask, labels=labels)  # mean over non--100 labels after the shift
    res.loss.backward()
    logits_last = res.logits.detach()[torch.arange(len(last)), last][:, :2048]

    m.save_adapter(out, "task", with_head=False, use_safetensors=True)
    files = ["adapter.safetensors"]
    assert sorted(os.listdir(out)) == ["adapter.safetensors", "adapter_config.json"], os.listdir(out)
    grads = collect_grads(m, out, files)
    layers = sorted({int(k.split(".")[2]) for k in grads})
    assert layers == [28, 29], layers
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))["config"]
    del m

    # (1) independent forward/backward from the formulas on the plain model
    P = leaves(out, files)
    plain = copy.deepcopy(base).eval()
    for p in plain.parameters(): p.requires_grad_(False)
    llama_manual(plain, P, cfg)
    res2 = plain(input_ids=ids, attention_mask=mask, labels=labels)
    res2.loss.backward()
    dl = (res2.logits.detach()[torch.arange(len(last)), last][:, :2048] - logits_last).abs().max().item()
    assert dl < 1e-4 and abs(res2.loss.item() - res.loss.item()) < 1e-5, (dl, res2.loss.item(), res.loss.item())
    worst = compare_grads(P, grads, out_name)
    del plain, res2

    # (2) reload through AdapterHub
    again = copy.deepcopy(base).eval()
    adapters.init(again)
    again.load_adapter(out, use_safetensors=True, set_active=True, with_head=False)
    with torch.no_grad():
        r3 = again(input_ids=ids, attention_mask=mask, labels=labels)
    dr = (r3.logits[torch.arange(len(last)), last][:, :2048] - logits_last).abs().max().item()
    assert dr < 1e-5 and abs(r3.loss.item() - res.loss.item()) < 1e-6, (dr, r3.loss.item())
    del again

    expected = {
        "loss": res.loss.item(), "logits_last": short_floats(logits_last), "last_positions": last.tolist(),
        "config_class": type(config).__name__, "reduction_factor": 16, "bottleneck_dim": 576 // 16,
        "leave_out": list(range(28)), "adapted_layers": layers,
        "perturbation": f"every adapter tensor += {PERTURB} * N(0,1) after AdapterHub's init (torch.manual_seed(1), "
                        "names sorted)",
        "loss_reduction": batch["loss_reduction"],
        "logits_last_what": "the first 2048 vocab logits at each sequence's last real position (attention_mask "
                            "sum - 1), shortest float32 text",
        "base_model": "SmolLM2-135M-Instruct Q4_1 GGUF dequantized to float32 by transformers (gguf_file=)",
        "tensors": describe(out, files),
        "checks": {"independent_logits_last_max_abs_diff": dl, "independent_grads_worst_relative": worst,
                   "reload_logits_last_max_abs_diff": dr},
        "notes": MATH,
    }
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    publish(out)
    print("wrote", out, "loss", res.loss.item(), "adapter tensors", len(grads))


d, f = os.path.split(smollm2_gguf)
smollm2_base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
smollm2_base.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
smollm2_base.eval()
assert smollm2_base.config.num_hidden_layers == 30
smollm2(SeqBnConfig(reduction_factor=16, leave_out=list(range(28))), "bottleneck-smollm2-seqbn", smollm2_base)
smollm2(ParBnConfig(reduction_factor=16, leave_out=list(range(28))), "bottleneck-smollm2-parbn", smollm2_base)
