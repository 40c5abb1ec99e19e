#!/usr/bin/env python3
"""Dequantisation references for Graft's GGUF reader, from llama.cpp's own gguf-py (`gguf.quants`).

For each block type: a few blocks of random bytes (scale fields set to finite f16/f32 values), and
what gguf-py's `dequantize` makes of them. Run in the peer environment (../shared/tools/peer-env.sh):

  python scripts/reference/make-gguf-references.py [--out Tests/Fixtures/gguf/dequant.safetensors]
"""
import argparse
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../Tests/Fixtures/gguf/dequant.safetensors"))
args = ap.parse_args()
rng = np.random.default_rng(2026)

# (Q8_K, an intermediate type llama.cpp never stores weights in, has no dequantize in gguf-py.)
# Byte offsets of the half-precision scale fields of each block type (ggml-common.h).
f16_fields = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
              Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
tensors = {}
for qt in [Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qt]
    nblocks = 8 if block_elems > 1 else 64
    raw = rng.integers(0, 256, size=(nblocks, block_bytes), dtype=np.uint8)
    if qt == Q.F16:
        raw = rng.uniform(-4, 4, size=nblocks).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    elif qt == Q.BF16:
        raw = (rng.uniform(-4, 4, size=nblocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(nblocks, 2)
    elif qt == Q.Q8_K:
        raw[:, 0:4] = rng.uniform(-0.1, 0.1, size=nblocks).astype(np.float32).view(np.uint8).reshape(nblocks, 4)
    else:
        for off in f16_fields[qt]:
            raw[:, off:off + 2] = rng.uniform(-0.1, 0.1, size=nblocks).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    flat = raw.reshape(-1)
    expected = gguf.quants.dequantize(flat, qt).astype(np.float32).reshape(-1)
    tensors[f"{qt.name}.blocks"] = flat
    tensors[f"{qt.name}.expected"] = expected
save_file(tensors, args.out, metadata={"source": "gguf-py 0.19.0 quants.dequantize"})
print("wrote", args.out, len(tensors) // 2, "types")
