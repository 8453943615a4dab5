#!/usr/bin/env bash
# Builds llama.cpp's multimodal tools (llama-mtmd-cli, llama-mtmd-debug) on the CPU from the
# llama.cpp source that node-llama-cpp ships in its npm package (llama/gitRelease.bundle), so the
# binaries are the same llama.cpp release node-llama-cpp's prebuilt binary runs. Nothing is
# downloaded. test/export/llama-cpp-mmproj.test.ts uses llama-mtmd-debug from here.
#
#   tools/llama-cpp/build.sh            # → node_modules/.cache/splint-llama-cpp/bin/
#   JOBS=16 tools/llama-cpp/build.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bundle="$root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
dest="$root/node_modules/.cache/splint-llama-cpp"
[ -f "$bundle" ] || { echo "error: $bundle not found; run npm ci first" >&2; exit 2; }
command -v cmake >/dev/null || { echo "error: cmake is needed (apt-get install cmake g++)" >&2; exit 2; }
rm -rf "$dest/src"
mkdir -p "$dest"
git clone --quiet "$bundle" "$dest/src"
cmake -S "$dest/src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON >/dev/null
cmake --build "$dest/build" -j "${JOBS:-$(nproc)}" --target llama-mtmd-cli llama-mtmd-debug
mkdir -p "$dest/bin"
cp -a "$dest/build/bin/." "$dest/bin/"
echo "built: $dest/bin/llama-mtmd-cli, $dest/bin/llama-mtmd-debug ($(git -C "$dest/src" describe --tags --always 2>/dev/null || echo bundled))"
