#!/bin/bash
# bench/gpu/run.sh: on a GPU machine, from the repository root with .dev/pkg.tar.xz carried (bench/gpu/pack.sh):
# the CUDA backend's op tests, the goldens on the GPU, and gpu_bench's table for SD 1.5 512x512 and SDXL
# 1024x1024 at 20 steps, two workers on one GPU. Everything it prints goes to $OUT/log too.
# STAGES (default "ops sd15 xl two") picks what runs.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log") 2>&1
STAGES=${STAGES:-ops sd15 xl two}
D=/tmp/d
mkdir -p $D && tar -C $D -xJf .dev/pkg.tar.xz && D=$D/pkg
cub=$(find / -xdev -name 'libcublas.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$D/lib:$(dirname "${cub:-/usr/local/cuda/lib64/x}")
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
nproc; echo "cublas: $cub"
$D/bin/sdw-cuda-info
T=/tmp/b/tmp
mkdir -p $T
export SDW_BUILD_DIR=/tmp/b SDW_SOURCE_DIR=$PWD SDW_TESTDATA_DIR=$PWD/tests/data SDW_TEST_BACKEND=cuda
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
t() { local s=$SECONDS; timeout "$@"; local rc=$?; echo "[rc=$rc, $((SECONDS - s)) s: $2]"; return $rc; }
# the checkpoints (the files the goldens came from), written while the op tests run; SDXL's (6.9 GB) goes on
# writing while SD 1.5 runs
mk() { $D/bin/sd-worker-engine mkmodel --preset $1-random --seed 1 --dtype f16 --output $T/rand$1-s1-f16.safetensors; }
mk sd15 > $OUT/mkmodel.log 2>&1 &
mk15=$!
if has xl; then mk sdxl > $OUT/mkmodel_xl.log 2>&1 & fi
mkxl=$!
if has ops; then echo "== op tests"; t 120 $D/bin/test_backend_cuda; fi
wait $mk15; tail -3 $OUT/mkmodel.log
M15=$T/randsd15-s1-f16.safetensors
if has sd15; then
    echo "== SD 1.5 goldens on the GPU"
    for g in test_golden_sd15_e2e test_golden_sd15_lora test_golden_sd15_img2img test_golden_sd15_taesd; do
        t 180 $D/bin/$g
    done
    echo "== SD 1.5 512x512, 20 steps"
    t 240 $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 3 --cpu-compare --out $OUT --tag sd15
    echo "== SD 1.5 512x512 profiled (every op synchronised: slower; the split is what counts)"
    SDW_PROFILE=1 t 120 $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 1 --tag sd15prof
fi
MXL=$T/randsdxl-s1-f16.safetensors
if has xl; then
    wait $mkxl; tail -3 $OUT/mkmodel_xl.log
    echo "== SDXL golden on the GPU"
    SDW_MANUAL_TESTS=1 SDW_SDXL_MODEL=$MXL t 300 $D/bin/test_golden_sdxl_e2e
    echo "== SDXL 1024x1024, 20 steps"
    t 240 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 2 --out $OUT --tag sdxl
    SDW_PROFILE=1 t 120 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 1 --tag sdxlprof
fi
if has two; then
    echo "== two workers on one GPU at once (two processes, same job): both images equal the single run's"
    mkdir -p /tmp/w1 /tmp/w2
    $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 2 --out /tmp/w1 --tag w1 > /tmp/w1/log 2>&1 &
    p1=$!
    $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 2 --out /tmp/w2 --tag w2 > /tmp/w2/log 2>&1 &
    p2=$!
    wait $p1; r1=$?; wait $p2; r2=$?
    cat /tmp/w1/log /tmp/w2/log
    echo "worker rcs $r1 $r2"
    for w in w1 w2; do
        if [ -f $OUT/sd15_512.png ]; then
            python3 - "$OUT/sd15_512.png" "/tmp/$w/${w}_512.png" <<'PY' || echo "compare failed"
import sys
from PIL import Image
import numpy as np
a = np.asarray(Image.open(sys.argv[1]).convert("RGB"), dtype=np.int16)
b = np.asarray(Image.open(sys.argv[2]).convert("RGB"), dtype=np.int16)
d = np.abs(a - b)
print(f"{sys.argv[2]}: max |delta| {d.max()}, mean {d.mean():.4f} against the single run")
PY
        fi
    done
fi
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
echo "== done in $SECONDS s"
