# Sourced by scripts/gpu-check and scripts/gpu-bench: where CUPTI is, for the activity timeline
# (native/cuda/src/activity.cu dlopens it). CUPTI is optional: when none is found the library
# still builds and runs, and the timeline says it is unavailable.

# find_cupti: sets CUPTI_LIB_FILE (a libcupti.so* to load, "" if none) and CUPTI_INC (a folder
# with cupti.h for the build, "" when the toolkit's include folder has it or none was found).
# Looked for in the toolkit (CUDA_HOME/extras/CUPTI, CUDA_HOME/lib64), then under every nvidia
# folder of Python's site-packages: the nvidia-cuda-cupti wheel puts CUDA 13's in nvidia/cu13/lib
# and CUDA 12's in nvidia/cuda_cupti/lib.
find_cupti() {
  local cuda_home="${CUDA_HOME:-/usr/local/cuda}" nvidia dir file
  local dirs=("$cuda_home/extras/CUPTI/lib64" "$cuda_home/lib64")
  while IFS= read -r nvidia; do
    if [[ -n "$nvidia" ]]; then dirs+=("$nvidia"/cu13/lib "$nvidia"/cuda_cupti/lib "$nvidia"/*/lib); fi
  done < <(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)
  CUPTI_LIB_FILE=""
  for dir in "${dirs[@]}"; do
    # The CUDA 13 soname first; a folder may hold only the fully versioned file.
    for file in "$dir"/libcupti.so.13 "$dir"/libcupti.so "$dir"/libcupti.so.*; do
      if [[ -f "$file" ]]; then
        CUPTI_LIB_FILE="$file"
        break 2
      fi
    done
  done
  CUPTI_INC=""
  if [[ ! -f "$cuda_home/include/cupti.h" && -n "$CUPTI_LIB_FILE" ]]; then
    # Beside the library's folder: the wheel's nvidia/cu13/include, the toolkit's extras/CUPTI/include.
    dir="$(dirname "$CUPTI_LIB_FILE")/../include"
    if [[ -f "$dir/cupti.h" ]]; then CUPTI_INC="$(cd "$dir" && pwd)"; fi
  fi
}

# use_cupti: after find_cupti, points the activity timeline at the library it found, adds its
# folder to the loader path for CUPTI's own dependencies, and says which in CUPTI_STATUS. Added
# last: that folder may hold other CUDA libraries (nvidia/cu13/lib holds every CUDA 13 wheel's),
# which must not displace the cuBLAS the caller put first.
use_cupti() {
  if [[ -n "$CUPTI_LIB_FILE" ]]; then
    export SPLINT_CUPTI_LIB="$CUPTI_LIB_FILE"
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$CUPTI_LIB_FILE")"
    CUPTI_STATUS="cupti: $CUPTI_LIB_FILE${CUPTI_INC:+ (headers: $CUPTI_INC)}"
  else
    CUPTI_STATUS="cupti: none found (the activity timeline is off)"
  fi
}
