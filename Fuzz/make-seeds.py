#!/usr/bin/env python3
"""Writes the fuzz targets' small seed corpora into Fuzz/corpus/TARGET (committed; rerun to remake them). Needs
numpy. fuzz-gguf writes its own seeds (`fuzz-gguf --write-seeds DIR`, run by make fuzz): no GGUF is committed."""
import json, os, struct
import numpy as np

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
def out(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f: f.write(data if isinstance(data, bytes) else data.encode())

def safetensors(tensors, meta=None):
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if meta: header["__metadata__"] = meta
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob

f32 = np.arange(6, dtype=np.float32).reshape(2, 3)
out("fuzz-safetensors", "f32-bf16-f16.safetensors", safetensors({
    "a.weight": ("F32", [2, 3], f32.tobytes()),
    "b.weight": ("BF16", [3], (np.array([1, -2, 0.5], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()),
    "c.bias": ("F16", [2], np.array([0.25, -1], dtype=np.float16).tobytes()),
    "d.ids": ("I64", [2], np.array([3, 4], dtype=np.int64).tobytes())}, {"format": "pt"}))
out("fuzz-safetensors", "empty.safetensors", safetensors({}))

wordpiece = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [
                {"id": 0, "content": "[PAD]", "special": True}, {"id": 1, "content": "[UNK]", "special": True},
                {"id": 2, "content": "[CLS]", "special": True}, {"id": 3, "content": "[SEP]", "special": True}],
             "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
             "pre_tokenizer": {"type": "BertPreTokenizer"},
             "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                                "pair": [], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
             "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
             "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                       "vocab": {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", ",", "world", "!", "##s", "qu", "##e"])}}}
out("fuzz-tokenizer-json", "wordpiece.json", json.dumps(wordpiece))
bpe = ["<s>", "</s>", "H", "e", "l", "o", "Ġ", "w", "r", "d", "He", "ll", "llo", "Hello"]
bpejson = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<s>", "special": True}], "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                     "fuse_unk": False, "byte_fallback": False, "vocab": {t: i for i, t in enumerate(bpe)}, "merges": ["H e", "l l", "ll o", "He llo"]}}
out("fuzz-tokenizer-json", "bpe.json", json.dumps(bpejson))

for i, text in enumerate(["Hello, world!", "¿Qué tal? 你好 🙂", "<|im_start|>user\nhi<|im_end|>", "a" * 300, "\u0000\uFFFD\u200b e\u0301", "[CLS] [SEP] [MASK]"]):
    out("fuzz-tokenize", f"text{i}.txt", text)

configs = {
    "lora": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "task_type": "SEQ_CLS", "modules_to_save": ["classifier"]},
    "lora-regex": {"peft_type": "LORA", "r": 4, "lora_alpha": 4, "target_modules": ".*\\.(q|v)_proj", "rank_pattern": {"q_proj": 2}, "use_dora": True},
    "adalora": {"peft_type": "ADALORA", "r": 8, "init_r": 12, "target_r": 8, "lora_alpha": 8, "target_modules": ["query"], "rank_pattern": {"bert.encoder.layer.0.attention.self.query.lora_E": [True, False]}, "total_step": 10},
    "ia3": {"peft_type": "IA3", "target_modules": ["key", "output.dense"], "feedforward_modules": ["output.dense"]},
    "vera": {"peft_type": "VERA", "r": 256, "target_modules": ["query"], "projection_prng_key": 0, "save_projection": True},
    "nola": {"peft_type": "NOLA", "r": 4, "lora_alpha": 8, "num_bases": 16, "target_modules": ["query"]},
    "prompt": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 20, "token_dim": 384, "num_transformer_submodules": 1},
    "prefix": {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4, "token_dim": 384, "num_layers": 6},
    "ept": {"peft_type": "EPT", "num_virtual_tokens": 4, "r": 4, "lora_alpha": 1, "num_spaces": 2, "embedding_positions": 8, "token_dim": 16},
    "adapterhub": {"config": {"architecture": "bottleneck", "mh_adapter": False, "output_adapter": True, "reduction_factor": 16, "non_linearity": "relu"}, "name": "x", "model_class": "BertModel"},
}
for k, v in configs.items(): out("fuzz-adapter-config", k + ".json", json.dumps(v))

# mergekit configs: the reference fixtures' (every method Graft has), plus continual and adapter forms.
fixtures = os.path.join(os.path.dirname(root), "..", "Tests", "Fixtures", "reference", "merge", "configs")
for name in sorted(os.listdir(fixtures)):
    with open(os.path.join(fixtures, name)) as f: out("fuzz-merge-config", name, f.read())
out("fuzz-merge-config", "opcm-adapters.yml", "merge_method: opcm\nbase_model: base\nparameters: {alpha: 0.5}\nmodels:\n"
    "- model: base+lora-a\n- model: base+lora-b\n  parameters: {weight: [0.2, {filter: mlp, value: 0.5}, 1.0]}\ndtype: bfloat16\nout_dtype: float16\n")
out("fuzz-merge-config", "pcb-tsv.yml", "merge_method: pcb\nbase_model: b\nparameters: {density: 0.2, evolution: 3}\nmodels: [{model: a}, {model: c}]\n")

# Dataset rows: JSON Lines and CSV with quotes, doubled quotes, newlines in quotes and a byte-order mark.
out("fuzz-table", "rows.jsonl", '{"text": "great film", "label": "pos"}\n{"text": "dull \\u00e9 \\"x\\"", "label": 0}\n\n{"text": "a", "label": null}\n')
out("fuzz-table", "rows.csv", '\ufefftext,label\n"hello, world",pos\n"two\nlines ""quoted""",neg\nplain,1\n')
out("fuzz-table", "rows.tsv", "0\tlabel\tmore\nx\ty\tz\n")

# Chat templates: the real ones the reference tests render (SmolLM2, Qwen2.5, Llama 3.1, Mistral, Gemma) and
# the one-feature snippets, from Tests/Fixtures/reference/chat-templates.
fixtures = os.path.join(os.path.dirname(root), "..", "Tests", "Fixtures", "reference", "chat-templates")
for name in sorted(os.listdir(os.path.join(fixtures, "templates"))):
    out("fuzz-chat-template", name, open(os.path.join(fixtures, "templates", name), "rb").read())
for i, case in enumerate(json.load(open(os.path.join(fixtures, "rendered.json")))["snippets"]["cases"]):
    out("fuzz-chat-template", "snippet-%02d.jinja" % i, case["template"])
print("seeds written under", root)
