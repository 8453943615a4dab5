#!/usr/bin/env bash
# bench/serve-throughput.ts on a GPU machine that has neither Node nor network, in two halves:
#
#   bench/serve-gpu.sh --prepare   here (node_modules installed): .carry/ with the bench bundled,
#                                  the packages it loads from disk and an xz-compressed node. Only
#                                  what this bench needs, so the working tree and .carry stay under
#                                  the device tool's 64 MiB: gpu-check's own bundles are left out,
#                                  and parquet-wasm (reached through bench/workload.ts, never called
#                                  here) is a stub.
#   bench/serve-gpu.sh [ARGS…]     there, from the repository root with .carry carried: builds
#                                  native/cuda through scripts/gpu-check (no check steps), then runs
#                                  the bench on CUDA with ARGS (default: the 3B architecture at the
#                                  tutorial's image size), results in $OUT/serve-throughput.jsonl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/.carry"

if [[ "${1:-}" == --prepare ]]; then
  # shellcheck source=scripts/carry-bundle.sh
  source "$ROOT/scripts/carry-bundle.sh"
  rm -rf "$CARRY"
  mkdir -p "$CARRY"
  bundle_entries "$ROOT" "$CARRY" bench/serve-throughput.ts:serve-throughput
  carry_packages "$ROOT" "$CARRY"
  rm -rf "$CARRY/node_modules/parquet-wasm"
  mkdir -p "$CARRY/node_modules/parquet-wasm"
  echo '{"name":"parquet-wasm","version":"0.0.0-stub","type":"module","main":"index.js"}' >"$CARRY/node_modules/parquet-wasm/package.json"
  cat >"$CARRY/node_modules/parquet-wasm/index.js" <<'JS'
// A stub: the serve bench loads src/data/hf-dataset.ts through bench/workload.ts but reads no Parquet.
const stub = () => { throw new Error("parquet-wasm is a stub in the serve bench's carry"); };
export const Compression = {};
export const readParquet = stub;
export const writeParquet = stub;
export class Table {}
export class WriterPropertiesBuilder {}
JS
  xz -T0 -c "$(command -v node)" >"$CARRY/node.xz"
  du -sh "$CARRY"
  echo "prepared $CARRY: run bench/serve-gpu.sh on the GPU machine with .carry carried"
  exit 0
fi

OUT_DIR="${OUT:-$ROOT/out/serve-gpu}"
mkdir -p "$OUT_DIR"
# gpu-check builds the library and unpacks node to /tmp/splint-node; with no steps it stops there.
GPU_CHECK_STEPS=none OUT="$OUT_DIR/check" bash "$ROOT/scripts/gpu-check" >"$OUT_DIR/build.txt" 2>&1 || { tail -20 "$OUT_DIR/build.txt"; exit 1; }
NODE="$(command -v node || echo /tmp/splint-node)"
ARGS=("$@")
[[ ${#ARGS[@]} -gt 0 ]] || ARGS=(--size 3b --backend cuda --matmul bf16 --image-size 644 --max-tokens 8 --concurrency 1,8,32)
SPLINT_CUDA_LIB="$ROOT/native/cuda/build/libsplint_cuda.so" SPLINT_REQUIRE_CUDA=1 \
  "$NODE" "$CARRY/serve-throughput.mjs" "${ARGS[@]}" --out "$OUT_DIR/serve-throughput.jsonl"
