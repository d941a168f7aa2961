#!/bin/sh
# bench/sd15_table.sh: issue 12's table in one run: SD 1.5 at SIZE (512), euler, cfg 7, STEPS (2), through
# `sd-worker generate` in fp32 and in bf16 and through the peer (PEER=path/to/sd-cli), at 1 and 2 threads.
# Prints seconds per UNet step (with CFG; sampling time / steps, and the last step alone, which pays no
# first touches), VAE decode seconds, load seconds and peak RSS, and the ratios
# ours/peer. Not a test; run it alone on the machine:
#   MODEL=/path/randsd15-s1-f16.safetensors PEER=/path/sd-cli bench/sd15_table.sh
# The peer loads each model's weights when it first runs it, so its "sampling completed" time includes
# reading the UNet; the UNet's "loading tensors completed" time just before it is subtracted (shown apart).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
model=${MODEL:-$build/tmp/randsd15-s1-f16.safetensors}
size=${SIZE:-512}
steps=${STEPS:-2}
threads_list=${THREADS_LIST:-"1 2"}
[ -s "$model" ] || { echo "sd15_table.sh: no $model (sd-worker mkmodel --preset sd15-random)" >&2; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/sd15-table.XXXXXX")
trap '[ -n "${KEEP:-}" ] && cp "$out"/*.log "$KEEP"/ 2>/dev/null; rm -rf "$out"' EXIT
rss() { awk -F': ' '/Maximum resident/{printf "%.2f", $2/1048576}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$1"; }

ours() { # ours THREADS PRECISION -> "step decode load rss"
    log=$out/ours-$1-$2.log
    /usr/bin/time -v "$build/sd-worker" generate --model "$model" --prompt "a photo of a cat" --seed 42 \
        --steps "$steps" --cfg 7 --sampler euler --width "$size" --height "$size" --threads "$1" \
        --precision "$2" --output "$out/ours-$1-$2.png" >"$log" 2>&1
    s=$(sed -n 's/.*sample \([0-9.]*\) s.*/\1/p' "$log")
    d=$(sed -n 's/.*decode \([0-9.]*\) s.*/\1/p' "$log")
    l=$(sed -n 's/.*loaded in \([0-9.]*\) s.*/\1/p' "$log")
    # the last step alone: the progress lines give the time since sampling began
    k=$(awk '/^step [0-9]+\/[0-9]+ /{p = c; c = $3} END{printf "%.2f", c - p}' "$log")
    echo "$(awk -v t="$s" -v n="$steps" 'BEGIN{printf "%.2f", t/n}') $d $l $(rss "$log") $k"
}

peer() { # peer THREADS -> "step decode load rss unet_load"
    log=$out/peer-$1.log
    (cd "$out" && /usr/bin/time -v "$PEER" -m "$model" -p "a photo of a cat" -s 42 --sampling-method euler \
        --cfg-scale 7 -W "$size" -H "$size" --steps "$steps" --rng cuda -t "$1" --backend BLAS \
        -o "peer-$1.png" >"$log" 2>&1)
    awk -v n="$steps" -v r="$(rss "$log")" '
        /loading tensors completed/ { sub(/.*taking /, ""); sub(/s.*/, ""); load += $0; last = $0 }
        /sampling completed/ { sub(/.*taking /, ""); sub(/s.*/, ""); samp = $0; unet = last }
        /decode_first_stage completed/ { sub(/.*taking /, ""); sub(/s.*/, ""); dec = $0 }
        END { printf "%.2f %.2f %.2f %s %.2f ", (samp - unet) / n, dec, load, r, unet }' "$log"
    # the last step alone, from the progress bar ("2/2 - 21.81s/it")
    grep -ao '[0-9]*/[0-9]* - [0-9.]*s/it' "$log" | tail -n 1 | awk '{sub(/s\/it/, "", $3); print $3}'
}

echo "SD 1.5 $(basename "$model"), ${size}x${size}, euler, cfg 7, $steps steps; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %9s %9s %8s %8s %10s\n' "run" "s/step" "decode s" "load s" "RSS GiB" "last step"
for t in $threads_list; do
    set -- $(ours "$t" fp32)
    f_step=$1 f_dec=$2 f_last=$5
    printf '%-22s %9s %9s %8s %8s %10s\n' "ours fp32, $t thr" "$1" "$2" "$3" "$4" "$5"
    set -- $(ours "$t" bf16)
    b_step=$1 b_dec=$2 b_last=$5
    printf '%-22s %9s %9s %8s %8s %10s\n' "ours bf16, $t thr" "$1" "$2" "$3" "$4" "$5"
    if [ -n "${PEER:-}" ]; then
        set -- $(peer "$t")
        printf '%-22s %9s %9s %8s %8s %10s   (UNet weights read during sampling: %s s, subtracted)\n' \
            "peer, $t thr" "$1" "$2" "$3" "$4" "$6" "$5"
        awk -v fs="$f_step" -v bs="$b_step" -v fd="$f_dec" -v bd="$b_dec" -v ps="$1" -v pd="$2" -v t="$t" \
            -v fl="$f_last" -v bl="$b_last" -v pl="$6" \
            'BEGIN{printf "ratio ours/peer, %s thr: step fp32 %.2f, bf16 %.2f; decode fp32 %.2f, bf16 %.2f; " \
                   "last step fp32 %.2f, bf16 %.2f\n", t, fs/ps, bs/ps, fd/pd, bd/pd, fl/pl, bl/pl}'
    fi
    eval "f_step_$t=$f_step b_step_$t=$b_step"
done
if [ -n "${f_step_1:-}" ] && [ -n "${f_step_2:-}" ]; then
    awk -v a="$f_step_1" -v b="$f_step_2" -v c="$b_step_1" -v d="$b_step_2" \
        'BEGIN{printf "scaling 1 -> 2 threads (t1 / (2 t2)): fp32 %.0f%%, bf16 %.0f%%\n", 100*a/(2*b), 100*c/(2*d)}'
fi
