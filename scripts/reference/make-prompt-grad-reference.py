#!/usr/bin/env python3
"""Makes four backward-pass fixtures under Tests/Fixtures/reference/models/, in the layout of the shared grad-*
fixtures (adapter from save_pretrained, batch.json, expected.json with the loss, and grads.safetensors with
d loss / d every saved adapter tensor, named as in the adapter file). Dropout off (model.eval()).

Both methods save their one trained tensor as `prompt_embeddings` (live: prompt_encoder.default.embedding.weight).

  grad-minilm-prompt:   the grad-minilm-seqcls batch through PEFT prompt tuning (8 virtual tokens, TEXT init from
                        "Sentiment:") on all-MiniLM-L6-v2 for sequence classification (3 labels). The init text
                        tokenizes to 4 ids ([CLS] sentiment : [SEP]), which PEFT repeats to fill 8; the prompt
                        starts as those rows of word_embeddings. The 8 prompt vectors are put before the word
                        embeddings of the batch and go through BertEmbeddings as inputs_embeds (position ids 0..7
                        for the prompt and 8.. for the text, token type 0, LayerNorm); the attention mask gets 8
                        leading ones. The pooler reads position 0, the first virtual token. The classifier is
                        saved as modules_to_save. expected.json: loss, logits, init_token_ids (after PEFT's
                        repeat/trim) and init_text_token_ids (the tokenizer's ids for the text).
  grad-smollm2-prompt:  the grad-smollm2-lora batch through prompt tuning (8 virtual tokens, TEXT init from a
                        sentence of 11 tokens, trimmed to its first 8) on SmolLM2; the tokenizer is read from the
                        GGUF file (tokenizer_kwargs {"gguf_file": …}). Labels get 8 leading -100; causal-LM loss
                        with labels as stored. expected.json: loss, init_token_ids, init_text_token_ids.
  grad-minilm-prefix:   the grad-minilm-seqcls batch through prefix tuning (4 virtual tokens, no projection) on
                        MiniLM for sequence classification: prompt_embeddings [4, 6·2·384] holds, per virtual
                        token, every layer's key and value; the classifier is saved as modules_to_save.
                        expected.json: loss, logits.
  grad-smollm2-prefix:  the grad-smollm2-lora batch through prefix tuning (4 virtual tokens, no projection) on
                        SmolLM2. GQA: PEFT sizes the prefix by the key/value heads (token_dim 3·64 = 192,
                        num_attention_heads 3), so prompt_embeddings is [4, 30·2·192]. expected.json: loss and
                        logits_last (the first 2048 logits at each sequence's last real position, [2][2048],
                        written as shortest float32 text to keep the file small).

PEFT 0.21.2 cannot run prefix tuning on BERT under transformers 5.24 as shipped: BertModel.forward renamed its
`past_key_values` argument to `cache` (the old name is still accepted, as a deprecated alias until 5.40), and
PEFT's sequence-classification prefix path checks the backbone's signature for the name `past_key_values` and
raises "Model does not support past key values…". let_peft_see_bert_cache() adds that name to the signature
PEFT inspects (this process only), so PEFT's own path runs: BertModel(…, past_key_values=cache) → pooler →
dropout → classifier → cross-entropy.

A row of a prefix-tuning prompt_embeddings is viewed as [num_layers·2, heads, head_dim]: block 2i is layer i's
key, block 2i+1 its value (prefix keys carry no position: no RoPE, no position embedding), head h in columns
h·head_dim ..< (h+1)·head_dim of its block. The prefix keys/values are put before every layer's own and every
query sees them (attention mask gets n leading ones); the real tokens take positions n.. (BERT position ids,
Llama RoPE), padding or not. The prefix embedding keeps its N(0,1) init. The prompt-tuning tables are checked
to start as the word_embeddings rows of init_token_ids. Each fixture is reloaded with PeftModel.from_pretrained and its loss recomputed.

  make-prompt-grad-reference.py MINILM_FOLDER SMOLLM2_GGUF FIXTURE_ROOT
Run with the peer environment's Python (../shared/tools/peer-env.sh)."""
import inspect, json, math, os, shutil, sys
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peft_compat import let_peft_see_bert_cache
from peft import PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model

minilm_dir, smollm2_gguf, root = sys.argv[1:4]
torch.set_num_threads(1)
models = os.path.join(root, "models")
smollm2_dir, smollm2_file = os.path.split(smollm2_gguf)


def finish(m, loss, src, out, expected):
    """Save the adapter, the gradients under the saved names, expected.json and the batch."""
    m.save_pretrained(out)
    f = safe_open(os.path.join(out, "adapter_model.safetensors"), "pt")
    names = list(f.keys())
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    grads, used = {}, set()
    for saved in names:
        # PEFT's saved name drops the adapter name ("default") that the live parameter carries
        # (live `…classifier.modules_to_save.default.weight`, saved `…classifier.weight`); the prompt encoder's
        # table (live `prompt_encoder.default.embedding.weight`) is saved as `prompt_embeddings`.
        if saved == "prompt_embeddings":
            hit = ["prompt_encoder.default.embedding.weight"]
            # saved = the table itself (no projection), so d loss / d saved = d loss / d table
            assert torch.equal(f.get_tensor(saved), params[hit[0]].detach()), saved
        else:
            hit = [n for n in params if n.replace(".default", "").replace(".modules_to_save", "") in (saved, saved + ".weight")]
        assert len(hit) == 1, (saved, hit)
        assert params[hit[0]].grad is not None, saved
        grads[saved] = params[hit[0]].grad.detach().clone().contiguous()
        used.add(hit[0])
    assert used == set(params), sorted(set(params) - used)  # every trainable tensor is in the adapter file
    save_file(grads, os.path.join(out, "grads.safetensors"))
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
    shutil.copy(os.path.join(src, "batch.json"), os.path.join(out, "batch.json"))
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme): os.remove(readme)  # PEFT's model-card template
    for f in os.listdir(out): os.chmod(os.path.join(out, f), 0o644)
    print("wrote", out, "loss", loss.item(), "tensors", {n: list(t.shape) for n, t in grads.items()})
    return names


def run(m, batch):
    ids = torch.tensor(batch["input_ids"]); mask = torch.tensor(batch["attention_mask"]); labels = torch.tensor(batch["labels"])
    return m(input_ids=ids, attention_mask=mask, labels=labels)


def check_reload(base, out, batch, loss):
    m = PeftModel.from_pretrained(base, out)
    m.eval()
    with torch.no_grad():
        again = run(m, batch).loss.item()
    print("reloaded", out, "loss", again)
    assert abs(again - loss) <= 1e-6 * max(1.0, abs(loss)), (again, loss)


def short_floats(t):
    """Nested lists of t's float32 values, each in its shortest text that reads back as the same float32 (about
    half the JSON of the double repr)."""
    return [short_floats(r) for r in t] if t.dim() > 1 else [float(str(np.float32(x))) for x in t.tolist()]


def text_init_ids(tokenizer, text, n):
    """The ids PEFT's PromptEmbedding takes its init rows from (peft/tuners/prompt_tuning/model.py): the
    tokenizer's ids for the text (special tokens included), trimmed to n or repeated until n."""
    ids = tokenizer(text)["input_ids"]
    out = ids[:n] if len(ids) > n else (ids * math.ceil(n / len(ids)))[:n]
    return ids, out


def check_text_init(m, ids):
    """The prompt table starts as the word_embeddings rows of the init ids."""
    table = m.prompt_encoder["default"].embedding.weight.detach()
    rows = m.word_embeddings.weight.detach()[torch.tensor(ids)]
    assert torch.equal(table, rows.float()), (table - rows).abs().max()


def load_minilm():
    return AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3)


def load_smollm2():
    return AutoModelForCausalLM.from_pretrained(smollm2_dir, gguf_file=smollm2_file, torch_dtype=torch.float32)


def fixture(src_name, out_name):
    src = os.path.join(models, src_name)
    out = os.path.join(models, out_name)
    os.makedirs(out, exist_ok=True)
    return src, out, json.load(open(os.path.join(src, "batch.json")))


# 1. Prompt tuning on MiniLM, sequence classification; the init text is shorter than 8 tokens (repeated).
src, out, batch = fixture("grad-minilm-seqcls", "grad-minilm-prompt")
text = "Sentiment:"
text_ids, init_ids = text_init_ids(AutoTokenizer.from_pretrained(minilm_dir), text, 8)
assert len(text_ids) < 8, text_ids
torch.manual_seed(0)
m = get_peft_model(load_minilm(), PromptTuningConfig(
    task_type="SEQ_CLS", num_virtual_tokens=8, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
    tokenizer_name_or_path=minilm_dir))
check_text_init(m, init_ids)
m.eval()  # dropout off
res = run(m, batch)
res.loss.backward()
finish(m, res.loss, src, out, {"loss": res.loss.item(), "logits": res.logits.detach().tolist(),
                               "init_token_ids": init_ids, "init_text_token_ids": text_ids})
del m
check_reload(load_minilm(), out, batch, res.loss.item())

# 2. Prompt tuning on SmolLM2, causal LM; the init text is longer than 8 tokens (trimmed). The GGUF file's
# tokenizer loads through AutoTokenizer.from_pretrained(folder, gguf_file=name), which PEFT reaches through
# tokenizer_kwargs.
src, out, batch = fixture("grad-smollm2-lora", "grad-smollm2-prompt")
text = "Answer the question below politely and in one short sentence."
text_ids, init_ids = text_init_ids(AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=smollm2_file), text, 8)
assert len(text_ids) > 8, text_ids
torch.manual_seed(0)
m = get_peft_model(load_smollm2(), PromptTuningConfig(
    task_type="CAUSAL_LM", num_virtual_tokens=8, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
    tokenizer_name_or_path=smollm2_dir, tokenizer_kwargs={"gguf_file": smollm2_file}))
check_text_init(m, init_ids)
m.eval()
loss = run(m, batch).loss  # labels get 8 leading -100; mean over non--100 labels after the shift
loss.backward()
finish(m, loss, src, out, {"loss": loss.item(), "init_token_ids": init_ids, "init_text_token_ids": text_ids})
del m
check_reload(load_smollm2(), out, batch, loss.item())

# 3. Prefix tuning on MiniLM, sequence classification.
src, out, batch = fixture("grad-minilm-seqcls", "grad-minilm-prefix")
let_peft_see_bert_cache()
torch.manual_seed(0)
m = get_peft_model(load_minilm(), PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4,
                                                      prefix_projection=False))
m.eval()
res = run(m, batch)
res.loss.backward()
finish(m, res.loss, src, out, {"loss": res.loss.item(), "logits": res.logits.detach().tolist()})
del m
check_reload(load_minilm(), out, batch, res.loss.item())

# 4. Prefix tuning on SmolLM2, causal LM (prefix sized by the key/value heads).
src, out, batch = fixture("grad-smollm2-lora", "grad-smollm2-prefix")
torch.manual_seed(0)
m = get_peft_model(load_smollm2(), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                                       prefix_projection=False))
c = m.peft_config["default"]
b = m.get_base_model().config
head_dim = getattr(b, "head_dim", None) or b.hidden_size // b.num_attention_heads
assert (c.num_layers, c.token_dim, c.num_attention_heads) == (b.num_hidden_layers, b.num_key_value_heads * head_dim,
                                                               b.num_key_value_heads), c
print("prefix config: num_layers", c.num_layers, "token_dim", c.token_dim, "num_attention_heads", c.num_attention_heads)
m.eval()
res = run(m, batch)
res.loss.backward()
last = torch.tensor(batch["attention_mask"]).sum(1) - 1  # logits cover the real tokens only (prefix is in the cache)
logits_last = res.logits.detach()[torch.arange(len(last)), last][:, :2048]
finish(m, res.loss, src, out, {"loss": res.loss.item(), "logits_last": short_floats(logits_last)})
del m
check_reload(load_smollm2(), out, batch, res.loss.item())
