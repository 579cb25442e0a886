#!/usr/bin/env python3
"""Convert all-MiniLM-L6-v2 (BERT, safetensors + vocab.txt) into a GGUF that llama.cpp's
"bert" architecture loads: F16 matrices, F32 norms and biases, a WordPiece ("bert") vocabulary,
mean pooling. Needs only the PyPI packages `gguf` and `numpy` (no torch, no transformers).

Tensor names and metadata follow llama.cpp's BERT loader (src/models/bert.cpp) and the
token rewriting of its convert_hf_to_gguf.py: WordPiece continuation pieces lose "##", word
starts gain the U+2581 "phantom space", bracketed special tokens stay as they are.

usage: minilm_to_gguf.py MODEL_DIR OUT.gguf
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data[base + start : base + end], dtype=DTYPES[meta["dtype"]])
        out[name] = arr.reshape(meta["shape"])
    return out


def gguf_name(hf: str):
    hf = hf.removeprefix("bert.")
    fixed = {
        "embeddings.word_embeddings.weight": "token_embd.weight",
        "embeddings.token_type_embeddings.weight": "token_types.weight",
        "embeddings.position_embeddings.weight": "position_embd.weight",
        "embeddings.LayerNorm.weight": "token_embd_norm.weight",
        "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    }
    if hf in fixed:
        return fixed[hf]
    if not hf.startswith("encoder.layer."):
        return None  # pooler, position_ids: not used by llama.cpp
    rest = hf[len("encoder.layer.") :]
    i, sub = rest.split(".", 1)
    table = {
        "attention.self.query": "attn_q",
        "attention.self.key": "attn_k",
        "attention.self.value": "attn_v",
        "attention.output.dense": "attn_output",
        "attention.output.LayerNorm": "attn_output_norm",
        "intermediate.dense": "ffn_up",
        "output.dense": "ffn_down",
        "output.LayerNorm": "layer_output_norm",
    }
    module, kind = sub.rsplit(".", 1)
    return f"blk.{i}.{table[module]}.{kind}" if module in table else None


def phantom(tok: str) -> str:
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    if tok.startswith("##"):
        return tok[2:]
    return "\u2581" + tok


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model_type"] == "bert", "not a BERT model"
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    assert len(vocab) == cfg["vocab_size"], f"vocab.txt has {len(vocab)} tokens, config says {cfg['vocab_size']}"

    w = gguf.GGUFWriter(str(out), "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list([phantom(t) for t in vocab])
    types = []
    for t in vocab:
        if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            types.append(gguf.TokenType.CONTROL if t != "[UNK]" else gguf.TokenType.UNKNOWN)
        elif t.startswith("[unused"):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_token_types(types)
    w.add_token_type_count(cfg.get("type_vocab_size", 2))
    ids = {t: i for i, t in enumerate(vocab)}
    w.add_unk_token_id(ids["[UNK]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])
    w.add_bos_token_id(ids["[CLS]"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    tensors = read_safetensors(model_dir / "model.safetensors")
    written = 0
    for hf, arr in sorted(tensors.items()):
        name = gguf_name(hf)
        if name is None:
            continue
        arr = arr.astype(np.float32)
        # Matrices in F16 (half the size, no measurable loss for retrieval); vectors in F32.
        if arr.ndim == 2 and not name.startswith("token_types"):
            arr = arr.astype(np.float16)
        w.add_tensor(name, arr)
        written += 1
    expected = 5 + 16 * cfg["num_hidden_layers"]
    assert written == expected, f"wrote {written} tensors, expected {expected}"

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {written} tensors")


if __name__ == "__main__":
    main()
