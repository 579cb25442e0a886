#!/usr/bin/env bash
# Embeddings, Wardbox beside llama.cpp's own server, in one run: `/api/embed` of wardbox-engine
# and `/v1/embeddings` of llama-server (built from the same llama.cpp sources by
# build-llama-server.sh) on the same GGUF (all-MiniLM-L6-v2 from the model store), the same
# threads, the same 32 chunk-sized inputs, requests interleaved; prints medians and the ratio.
#
#   engine/bench/embed-vs-llama-server.sh
#
# Environment:
#   WARDBOX_ENGINE_BIN   engine binary (default $CARGO_TARGET_DIR/release/wardbox-engine; build it
#                        with `cargo build --release -p wardbox-engine`)
#   BASELINE_ENGINE_BIN  an earlier engine build to time as well (optional)
#   WARDBOX_MODEL_STORE  model store with all-minilm:l6-v2 (models-bundle/fetch-embedding-model.sh)
#   THREADS (2), INPUTS (32), WORDS (140 words per input), ROUNDS (10)
#   ENGINE_ARGS          extra wardbox-engine arguments (e.g. --embed-batch 1024)
#   LLAMA_SERVER_ARGS    extra llama-server arguments
set -euo pipefail

die() { echo "embed-vs-llama-server: $*" >&2; exit 1; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ENGINE="${WARDBOX_ENGINE_BIN:-$TARGET/release/wardbox-engine}"
STORE="${WARDBOX_MODEL_STORE:-${WARDBOX_MODEL_CACHE:-$HOME/.cache/wardbox/models}/store}"
THREADS="${THREADS:-2}"
MODEL=all-minilm:l6-v2

[ -x "$ENGINE" ] || die "no engine binary at $ENGINE (cargo build --release -p wardbox-engine, or set WARDBOX_ENGINE_BIN)"
MANIFEST="$STORE/manifests/registry.ollama.ai/library/all-minilm/l6-v2"
[ -f "$MANIFEST" ] || die "$MODEL is not in the model store $STORE (run models-bundle/fetch-embedding-model.sh)"
GGUF="$STORE/blobs/$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print([l["digest"] for l in m["layers"] if l["mediaType"].endswith(".model")][0].replace(":", "-"))' "$MANIFEST")"
[ -f "$GGUF" ] || die "the model blob $GGUF is missing"
LLAMA_SERVER=$("$HERE/build-llama-server.sh" | tail -n 1)

# Spinning OpenMP threads stall on a shared machine (docs/engine.md); both servers get the same.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
LOGS=$(mktemp -d)

start_engine() { # binary port name
    # shellcheck disable=SC2086
    RUST_LOG=warn "$1" serve --store "$STORE" --tcp "127.0.0.1:$2" --preload "$MODEL" --threads "$THREADS" $4 \
        >"$LOGS/$3.log" 2>&1 &
    pids+=($!)
}
wait_ready() { # url what
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    die "$2 did not become ready (log in $LOGS)"
}

WB_PORT=$(free_port); start_engine "$ENGINE" "$WB_PORT" wardbox "${ENGINE_ARGS:-}"
# llama-server in two configurations, each its best for a kind of work: one slot per input of a
# request with a 512-token batch (several inputs share a decode, as the engine does), and one
# slot (one input per decode). Mean pooling as the engine's; batch = ubatch, since non-causal
# attention needs a whole sequence in one ubatch.
start_llama_server() { # port name args...
    local port=$1 name=$2; shift 2
    # shellcheck disable=SC2086
    "$LLAMA_SERVER" -m "$GGUF" --embedding --pooling mean --host 127.0.0.1 --port "$port" \
        -t "$THREADS" -tb "$THREADS" --no-webui "$@" ${LLAMA_SERVER_ARGS:-} >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
}
LS_PORT=$(free_port); start_llama_server "$LS_PORT" llama-server-batched -np "${INPUTS:-32}" -c 16384 -b 512 -ub 512
L1_PORT=$(free_port); start_llama_server "$L1_PORT" llama-server-single -np 1 -c 512 -b 512 -ub 512
extra=()
if [ -n "${BASELINE_ENGINE_BIN:-}" ]; then
    BL_PORT=$(free_port); start_engine "$BASELINE_ENGINE_BIN" "$BL_PORT" baseline ""
    extra=(--baseline "http://127.0.0.1:$BL_PORT")
    wait_ready "http://127.0.0.1:$BL_PORT/api/tags" "the baseline engine"
fi
wait_ready "http://127.0.0.1:$WB_PORT/api/tags" wardbox-engine
wait_ready "http://127.0.0.1:$LS_PORT/health" llama-server
wait_ready "http://127.0.0.1:$L1_PORT/health" "llama-server -np 1"

echo "threads $THREADS, load average $(cut -d' ' -f1-3 /proc/loadavg), model $GGUF"
python3 "$HERE/embed_bench.py" --wardbox "http://127.0.0.1:$WB_PORT" \
    --llama-server "llama-server -np ${INPUTS:-32}=http://127.0.0.1:$LS_PORT" --llama-server "llama-server -np 1=http://127.0.0.1:$L1_PORT" \
    --model "$MODEL" --inputs "${INPUTS:-32}" --words "${WORDS:-140}" --rounds "${ROUNDS:-10}" "${extra[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
