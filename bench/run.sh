#!/bin/sh
# bench/run.sh: builds sd_bench (and the random SD 1.5 checkpoint if missing) and runs it.
#   BUILD=build-e3 bench/run.sh [sd_bench options, e.g. --steps 2 --threads 1]
# Not a test: one 512x512 UNet step takes 20-30 s on the 2-vCPU machines; don't run it in a loop.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j2 --target sd_bench sd-worker-engine
model=${MODEL:-$build/tmp/randsd15-s1-f16.safetensors}
if [ ! -s "$model" ]; then
    mkdir -p "$(dirname "$model")"
    "$build/sd-worker-engine" mkmodel --preset sd15-random --seed 1 --dtype f16 --output "$model"
fi
exec "$build/sd_bench" --model "$model" "$@"
