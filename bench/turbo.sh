#!/bin/sh
# bench/turbo.sh: the SD-Turbo recipe end to end (load + encode + 1 step euler_a at cfg 1 + decode, 512x512)
# through `sd-worker generate`, and the peer's (stable-diffusion.cpp) on the same file when PEER= is set:
# wall time and peak RSS from /usr/bin/time -v, and the ratios peer/ours. Not a test.
#   MODEL=randsd21-s1-f16.safetensors PEER=/path/to/sd-cli bench/turbo.sh   (mkmodel --preset sd21-random)
# SD-Turbo is SD 2.1-shaped: the random SD 2.1 file has its tensors and cost. Run it alone (~5 GB).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
model=${MODEL:-$build/tmp/randsd21-s1-f16.safetensors}
size=${SIZE:-512}
steps=${STEPS:-1}
cfg=${CFG:-1}
threads=${THREADS:-2}
prompt="a cinematic photo of a red fox in the snow"
[ -s "$model" ] || { echo "turbo.sh: no $model (sd-worker mkmodel --preset sd21-random --seed 1 --dtype f16)" >&2; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/turbo-bench.XXXXXX")
# KEEP=DIR keeps both runs' logs (the peer's own timings) there
trap '[ -n "${KEEP:-}" ] && cp "$out"/*.log "$KEEP"/ 2>/dev/null; rm -rf "$out"' EXIT
# "Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.34" -> seconds
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%.2f", s}' "$1"; }
rss_gb() { awk -F': ' '/Maximum resident/{printf "%.2f", $2/1048576}' "$1"; }

/usr/bin/time -v "$build/sd-worker" generate --model "$model" --prompt "$prompt" --seed 42 --steps "$steps" \
    --cfg "$cfg" --sampler euler_a --width "$size" --height "$size" --threads "$threads" \
    --output "$out/ours.png" >"$out/ours.log" 2>&1
ow=$(wall_s "$out/ours.log")
orss=$(rss_gb "$out/ours.log")
grep -E "total [0-9.]* s" "$out/ours.log" || true
echo "ours: ${size}x${size}, $steps step euler_a cfg $cfg: ${ow} s wall end to end (load included), peak RSS ${orss} GB"
if [ -n "${PEER:-}" ]; then
    (cd "$out" && /usr/bin/time -v "$PEER" -m "$model" -p "$prompt" -s 42 --sampling-method euler_a \
        --cfg-scale "$cfg" -W "$size" -H "$size" --steps "$steps" --rng cuda -t "$threads" --backend BLAS \
        -o peer.png >peer.log 2>&1)
    pw=$(wall_s "$out/peer.log")
    prss=$(rss_gb "$out/peer.log")
    grep -E "generate_image completed" "$out/peer.log" || true
    echo "peer: ${size}x${size}, $steps step euler_a cfg $cfg: ${pw} s wall end to end (load included), peak RSS ${prss} GB"
    awk -v a="$pw" -v b="$ow" -v c="$prss" -v d="$orss" \
        'BEGIN{printf "ratio peer/ours: wall %.2f, peak RSS %.2f\n", a/b, c/d}'
fi
