#!/bin/sh
# run.sh: builds every libFuzzer target with clang (ASan + UBSan, the first finding aborts) and fuzzes each for
# a while. Usage, from anywhere: tests/fuzz/run.sh [seconds per target, default 60] [extra libFuzzer flags...].
# Writes to build-fuzz/ (corpora, logs, crash-* artifacts); exits non-zero on the first target that fails.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build-fuzz"
secs=${1:-60}
[ $# -gt 0 ] && shift
cc=${CC:-clang}
# -fno-sanitize-recover: a UBSan finding must stop the run, not scroll past as a warning
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE"
targets="fuzz_frame fuzz_safetensors fuzz_job_request fuzz_config fuzz_png fuzz_multipart fuzz_mask_png fuzz_png_info"
mkdir -p "$out"
cd "$root"

build() {
    name=$1
    shift
    echo "run.sh: building $name"
    # shellcheck disable=SC2086 # flags and pkg-config output are word lists
    $cc $flags "$@" -o "$out/$name"
}
build fuzz_frame -Icommon tests/fuzz/fuzz_frame.c common/frame.c common/gen_request.c common/gen_names.c $(pkg-config --cflags --libs msgpack)
build fuzz_safetensors -Iworker/engine tests/fuzz/fuzz_safetensors.c worker/engine/safetensors.c \
    worker/engine/dtype_convert.c worker/engine/fail.c $(pkg-config --cflags --libs jansson) -lpthread
build fuzz_job_request -Isupervisor -Icommon tests/fuzz/fuzz_job_request.c supervisor/validate.c \
    supervisor/validate_images.c supervisor/validate_loras.c common/gen_request.c common/gen_names.c \
    $(pkg-config --cflags --libs jansson) -lm
build fuzz_config -Iconfig -Icommon tests/fuzz/fuzz_config.c config/config.c config/yaml_tree.c common/log.c \
    $(pkg-config --cflags --libs yaml-0.1)
build fuzz_png -Iworker/engine tests/fuzz/fuzz_png.c worker/engine/png_io.c $(pkg-config --cflags --libs libpng)
build fuzz_multipart -Isupervisor tests/fuzz/fuzz_multipart.c supervisor/multipart.c
build fuzz_mask_png -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -Iworker/engine tests/fuzz/fuzz_mask_png.c worker/engine/mask_png.c $(pkg-config --cflags --libs libpng)
build fuzz_png_info -Isupervisor tests/fuzz/fuzz_png_info.c supervisor/png_info.c

# Seeds: the committed ones, the example configuration, and one small valid safetensors file (header
# {"w":F16 [2]} + 4 data bytes) so that fuzzer starts past the length check.
mkdir -p "$out/seeds-fuzz_safetensors" "$out/seeds-fuzz_config"
hdr='{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}'
n=$(printf '%s' "$hdr" | wc -c)
{ printf "$(printf '\\%03o' $((n & 255)) $((n >> 8 & 255)))"; printf '\000\000\000\000\000\000'
  printf '%s' "$hdr"; printf '\000\074\000\300'; } > "$out/seeds-fuzz_safetensors/seed.safetensors"
cp packaging/sd-worker.yaml "$out/seeds-fuzz_config/packaging.yaml"

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
for t in $targets; do
    corpus="$out/corpus-$t"
    mkdir -p "$corpus"
    seeds=""
    [ -d "tests/fuzz/seeds/$t" ] && seeds="$seeds tests/fuzz/seeds/$t"
    [ -d "$out/seeds-$t" ] && seeds="$seeds $out/seeds-$t"
    max_len=4096
    [ "$t" = fuzz_png ] && max_len=65536
    [ "$t" = fuzz_mask_png ] && max_len=65536
    echo "run.sh: fuzzing $t for ${secs}s"
    rc=0
    # shellcheck disable=SC2086 # seeds is a list of folders
    "$out/$t" -max_len=$max_len -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/$t-" "$@" \
        "$corpus" $seeds > "$out/$t.log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
    echo "run.sh: $t: rc=$rc execs=${execs:-?} corpus=$(ls "$corpus" | wc -l) log=$out/$t.log"
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$out/$t.log"
        exit "$rc"
    fi
done
echo "run.sh: every fuzzer ran ${secs}s without a finding"
