#!/bin/sh
# bench/sdxl.sh: SDXL seconds per step (with CFG) and peak RSS at 1024x1024 through `sd-worker generate`,
# and the peer's (stable-diffusion.cpp) on the same file when PEER=path/to/sd-cli is set. Not a test.
#   MODEL=randsdxl-s1-f16.safetensors SIZE=1024 STEPS=2 bench/sdxl.sh   (sd-worker mkmodel --preset sdxl-random)
# PRECISION=bf16 runs ours on the opt-in bf16 path. Needs ~8 GB free (the f16 weights, mapped) plus the
# activations, the peer ~15 GB: check `free -g`; run nothing else big beside it.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
model=${MODEL:-$build/tmp/randsdxl-s1-f16.safetensors}
size=${SIZE:-1024}
steps=${STEPS:-2}
[ -s "$model" ] || { echo "sdxl.sh: no $model (sd-worker mkmodel --preset sdxl-random --seed 1 --dtype f16)" >&2; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/sdxl-bench.XXXXXX")
# KEEP=DIR keeps both runs' logs (the peer's own timings) there
trap '[ -n "${KEEP:-}" ] && cp "$out"/*.log "$KEEP"/ 2>/dev/null; rm -rf "$out"' EXIT
/usr/bin/time -v "$build/sd-worker" generate --model "$model" --prompt "a photo of a cat" --seed 42 \
    --steps "$steps" --cfg 7 --sampler euler --width "$size" --height "$size" --output "$out/ours.png" \
    --precision "${PRECISION:-fp32}" >"$out/ours.log" 2>&1
# the summary line: "WxH seed S: encode A s, sample B s, decode C s, total D s"
step_s=$(sed -n 's/.*sample \([0-9.]*\) s.*/\1/p' "$out/ours.log")
rss=$(awk -F': ' '/Maximum resident/{printf "%.2f", $2/1048576}' "$out/ours.log")
grep -E "encode|total" "$out/ours.log" || true
echo "ours (${PRECISION:-fp32}): ${size}x${size}, $steps steps with CFG: $(awk -v t="$step_s" -v n="$steps" 'BEGIN{printf "%.1f", t/n}') s/step, peak RSS $rss GB"
if [ -n "${PEER:-}" ]; then
    (cd "$out" && /usr/bin/time -v "$PEER" -m "$model" -p "a photo of a cat" -s 42 --sampling-method euler \
        --cfg-scale 7 -W "$size" -H "$size" --steps "$steps" --rng cuda -t "${THREADS:-2}" --backend BLAS \
        -o peer.png >peer.log 2>&1)
    prss=$(awk -F': ' '/Maximum resident/{printf "%.2f", $2/1048576}' "$out/peer.log")
    grep -E "sampling completed|generate_image completed" "$out/peer.log" || true
    pstep=$(sed -n 's/.*sampling completed, taking \([0-9.]*\)s.*/\1/p' "$out/peer.log" | tail -1)
    echo "peer: ${size}x${size}, $steps steps with CFG: $(awk -v t="${pstep:-0}" -v n="$steps" 'BEGIN{printf "%.1f", t/n}') s/step, peak RSS $prss GB"
    awk -v a="${pstep:-0}" -v b="$step_s" -v c="$prss" -v d="$rss" \
        'BEGIN{printf "ratio peer/ours: s/step %.2f, peak RSS %.2f\n", (b>0?a/b:0), (d>0?c/d:0)}'
    wall() { awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$1"; }
    echo "wall end to end: ours $(wall "$out/ours.log"), peer $(wall "$out/peer.log")"
fi
