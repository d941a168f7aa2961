#!/bin/sh
# run.sh: builds the libFuzzer safetensors target with clang and fuzzes it for a while (default 60 s).
# Usage, from anywhere: tests/fuzz/run.sh [seconds] [extra libFuzzer flags...]. Writes to build-fuzz/.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build-fuzz"
secs=${1:-60}
[ $# -gt 0 ] && shift
mkdir -p "$out/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I"$root/worker/engine" \
    "$root/tests/fuzz/fuzz_safetensors.c" "$root/worker/engine/safetensors.c" "$root/worker/engine/dtype_convert.c" \
    $(pkg-config --cflags --libs jansson) -lpthread -o "$out/fuzz_safetensors"
# Seed: one small valid file (header {"w":F16 [2]} + 4 data bytes), so the fuzzer starts past the length check.
hdr='{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}'
n=$(printf '%s' "$hdr" | wc -c)
{ printf "$(printf '\\%03o' $((n & 255)) $((n >> 8 & 255)))"; printf '\000\000\000\000\000\000'
  printf '%s' "$hdr"; printf '\000\074\000\300'; } > "$out/corpus/seed.safetensors"
exec "$out/fuzz_safetensors" -max_len=4096 -max_total_time="$secs" "$@" "$out/corpus"
