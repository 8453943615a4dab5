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
# libvips, parquet-wasm's Node build, as CARRY/node_modules.tar.xz.
carry_packages() {
  local modules="$1/node_modules" staging
  staging="$(mktemp -d)" || return 1
  local dest="$staging/node_modules"
  # A missing package (node_modules installed on another platform) fails here, not on the GPU machine.
  mkdir -p "$dest/@koromix/koffi-linux-x64" "$dest/@img" "$dest/parquet-wasm" || return 1
  # koffi's vendored libraries and docs are for building and reading it, not for loading it: left
  # behind, so the carry stays under the device's 64 MiB with the working tree.
  mkdir -p "$dest/koffi" || return 1
  cp -r "$modules/koffi/package.json" "$modules/koffi"/*.js "$modules/koffi"/*.cjs "$modules/koffi/lib" "$modules/koffi/src" "$dest/koffi/" || return 1
  local koffi_native="$modules/@koromix/koffi-linux-x64"
  cp -r "$koffi_native/package.json" "$koffi_native/index.js" "$koffi_native/linux_x64" "$dest/@koromix/koffi-linux-x64/" || return 1
  local package
  for package in sharp detect-libc semver @img/colour @img/sharp-linux-x64 @img/sharp-libvips-linux-x64; do
    cp -r "$modules/$package" "$dest/$package" || return 1
  done
  cp -r "$modules/parquet-wasm/package.json" "$modules/parquet-wasm/node" "$dest/parquet-wasm/" || return 1
  # Compressed (libvips alone is 18 MB), so the carry and the working tree fit the device's 64 MiB.
  tar -C "$staging" -cf - node_modules | xz -T0 -9 >"$2/node_modules.tar.xz" || return 1
  rm -rf "$staging"
}

# unpack_packages CARRY: on the GPU machine, unpacks what carry_packages packed beside the bundles
# (the bundles resolve koffi, sharp and parquet-wasm from CARRY/node_modules).
unpack_packages() {
  [[ -d "$1/node_modules" || ! -f "$1/node_modules.tar.xz" ]] && return 0
  xz -dc "$1/node_modules.tar.xz" | tar -C "$1" -xf -
}
