#!/bin/bash
# bench/two_workers.sh: two `sd-worker generate` processes on one model at once (as two CPU workers on one
# host), sampling the sum of their RSS and PSS (/proc/PID/smaps_rollup) every 2 s: PSS shows the shared
# file pages. Run it under the model lock: flock /work/locks/model.lock bench/two_workers.sh
#   BUILD=build MODEL=build/tmp/randsd15-s1-f16.safetensors SIZE=256 OUT=/tmp/two bench/two_workers.sh
set -u
build=${BUILD:-build}
model=${MODEL:-$build/tmp/randsd15-s1-f16.safetensors}
size=${SIZE:-256}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
pids=""
for i in 1 2; do
    /usr/bin/time -v "$build/sd-worker-engine" generate --model "$model" --prompt "a photo of a cat" --seed $i \
        --steps 1 --width "$size" --height "$size" --threads 1 --output "$out/two$i.png" >"$out/two$i.log" 2>&1 &
    pids="$pids $!"
done
best_rss=0 best_pss=0
while :; do
    rs=0 ps=0 alive=0
    for p in $pids; do
        # the engine is the child of /usr/bin/time
        c=$(pgrep -P "$p" | head -1)
        [ -n "$c" ] && [ -r /proc/$c/smaps_rollup ] || continue
        alive=1
        rs=$((rs + $(awk '/^Rss:/{print $2}' /proc/$c/smaps_rollup 2>/dev/null || echo 0)))
        ps=$((ps + $(awk '/^Pss:/{print $2}' /proc/$c/smaps_rollup 2>/dev/null || echo 0)))
    done
    [ $alive = 1 ] || break
    [ $rs -gt $best_rss ] && best_rss=$rs
    [ $ps -gt $best_pss ] && best_pss=$ps
    sleep 2
done
wait
grep -h "Maximum resident" "$out"/two[12].log
echo "largest sum of RSS ${best_rss} kB, of PSS ${best_pss} kB (logs and PNGs in $out)"
