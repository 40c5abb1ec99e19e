#!/usr/bin/env python3
"""A small SentencePiece-style ("llama") vocabulary and llama.cpp's tokenization of test texts.

Trains a tiny SentencePiece BPE model (byte fallback on), writes it as a vocabulary-only GGUF with
gguf-py (tokenizer.ggml.model = llama: tokens, scores, token types), and records what llama.cpp
(llama-cpp-python, vocab_only) makes of some texts. The fixture keeps the vocabulary as JSON (tokens,
scores, types, special ids); the test writes it back into a GGUF. Run in the peer environment plus
`pip install sentencepiece`:

  python scripts/reference/make-spm-references.py [--out Tests/Fixtures/gguf]
"""
import argparse, json, os, tempfile

import gguf
import sentencepiece as spm
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../Tests/Fixtures/gguf"))
args = ap.parse_args()

corpus = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "Once upon a time, in a small village, there lived an old baker.",
    "The new movie is awesome, I loved every minute of it!",
    "Machine learning models can be merged into one multi-task model.",
] * 20
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "corpus.txt")
    open(path, "w").write("\n".join(corpus))
    spm.SentencePieceTrainer.train(input=path, model_prefix=os.path.join(d, "m"), vocab_size=400, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "m.model"))

tokens, scores, types = [], [], []
for i in range(sp.get_piece_size()):
    tokens.append(sp.id_to_piece(i)); scores.append(sp.get_score(i))
    types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)

out = os.path.join(tempfile.mkdtemp(), "spm-vocab.gguf")
w = gguf.GGUFWriter(out, "llama")
w.add_block_count(1); w.add_context_length(128); w.add_embedding_length(64); w.add_feed_forward_length(128)
w.add_head_count(4); w.add_layer_norm_rms_eps(1e-5)
w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default")
w.add_token_list(tokens); w.add_token_scores(scores); w.add_token_types(types)
w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0)
w.add_add_bos_token(True); w.add_add_space_prefix(True)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

llm = Llama(model_path=out, vocab_only=True, verbose=False)
texts = ["The quick brown fox.", "Hello world", "Machine learning models merge!", "  two spaces", "naïve café 🎉 ünïcödé",
         "Stock markets fell 42% on Tuesday.", "multi-task\nnew line"]
cases = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=False),
          "decoded": llm.detokenize(llm.tokenize(t.encode(), add_bos=False, special=False)).decode("utf-8", "replace")} for t in texts]
json.dump({"source": "llama-cpp-python (llama.cpp) vocab_only tokenize/detokenize",
           "vocab": {"tokens": tokens, "scores": scores, "types": types, "bos": 1, "eos": 2, "unk": 0,
                     "add_bos": True, "add_space_prefix": True},
           "cases": cases},
          open(os.path.join(args.out, "spm-expected.json"), "w"), indent=1, ensure_ascii=False)
print("wrote", os.path.join(args.out, "spm-expected.json"), len(tokens), "tokens;", len(cases), "cases")
os._exit(0)
