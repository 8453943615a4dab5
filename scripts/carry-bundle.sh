# Sourced by scripts/gpu-check and scripts/gpu-bench: what both need to bundle splint for a GPU
# machine that has neither Node nor network.

# bundle_entries ROOT CARRY SRC:NAME...: bundles each ROOT/SRC with esbuild into CARRY/NAME.mjs.
# koffi, sharp and parquet-wasm load native or .wasm files from beside themselves, so they stay
# outside the bundles and carry_packages copies them.
bundle_entries() {
  local root="$1" carry="$2"
  shift 2
  local esbuild="$root/node_modules/.bin/esbuild"
  [[ -x "$esbuild" ]] || { echo "$esbuild missing (run npm ci)" >&2; return 1; }
  local entry
  for entry in "$@"; do
    "$esbuild" "$root/${entry%%:*}" --bundle --platform=node --format=esm --target=node20 \
      --external:koffi --external:sharp --external:parquet-wasm \
      --banner:js="import { createRequire as __splintRequire } from 'node:module'; const require = __splintRequire(import.meta.url);" \
      --log-level=warning --outfile="$carry/${entry##*:}.mjs" || return 1
  done
}

# carry_packages ROOT CARRY: koffi with its linux-x64 build, sharp with its dependencies and
# libvips, parquet-wasm's Node build, into CARRY/node_modules.
carry_packages() {
  local modules="$1/node_modules" dest="$2/node_modules"
  # A missing package (node_modules installed on another platform) fails here, not on the GPU machine.
  mkdir -p "$dest/@koromix/koffi-linux-x64" "$dest/@img" "$dest/parquet-wasm" || return 1
  cp -r "$modules/koffi" "$dest/" || return 1
  local koffi_native="$modules/@koromix/koffi-linux-x64"
  cp -r "$koffi_native/package.json" "$koffi_native/index.js" "$koffi_native/linux_x64" "$dest/@koromix/koffi-linux-x64/" || return 1
  local package
  for package in sharp detect-libc semver @img/colour @img/sharp-linux-x64 @img/sharp-libvips-linux-x64; do
    cp -r "$modules/$package" "$dest/$package" || return 1
  done
  cp -r "$modules/parquet-wasm/package.json" "$modules/parquet-wasm/node" "$dest/parquet-wasm/" || return 1
}
