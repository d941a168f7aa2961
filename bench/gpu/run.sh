#!/bin/bash
# bench/gpu/run.sh: on a GPU machine, from the repository root with .dev/pkg.tar.xz carried (bench/gpu/pack.sh):
# the CUDA backend's op tests, the goldens on the GPU, gpu_bench's table for SD 1.5 512x512 and SDXL
# 1024x1024 at 20 steps (SD 1.5 also against the CPU engine's image), two engines on one GPU at once, and
# the service with two cuda workers on the GPU. Everything it prints goes to $OUT/log too. STAGES picks
# what runs (cpu: the CPU comparison, minutes on the engine's CPU path; half: SDW_CUDA_HALF=1, FP16 operands,
# against the default, with the op test and goldens in it; xlhalf: the same for SDXL).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log") 2>&1
STAGES=${STAGES:-ops sd15 cpu two serve xl}
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
# the checkpoints (the files the goldens came from); SDXL's (6.9 GB) goes on writing while SD 1.5 runs
mk() { $D/bin/sd-worker-engine mkmodel --preset $1-random --seed 1 --dtype f16 --output $T/rand$1-s1-f16.safetensors; }
mk sd15 > $OUT/mkmodel.log 2>&1 &
mk15=$!
if has xl || has xlhalf; then mk sdxl > $OUT/mkmodel_xl.log 2>&1 & fi
mkxl=$!
if has ops; then
    echo "== op tests"
    t 60 $D/bin/test_backend_cuda
fi
wait $mk15; tail -1 $OUT/mkmodel.log
M15=$T/randsd15-s1-f16.safetensors
if has sd15; then
    echo "== SD 1.5 goldens on the GPU"
    for g in test_golden_sd15_e2e test_golden_sd15_lora test_golden_sd15_img2img test_golden_sd15_taesd; do
        t 120 $D/bin/$g | grep -E "vs peer|delta|OK|FAIL|PASSED|rc="
    done
    echo "== SD 1.5 512x512, 20 steps"
    cpu=; has cpu && cpu=--cpu-compare
    t 300 $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 3 $cpu --out $OUT --tag sd15
    echo "== SD 1.5 512x512 profiled (every op synchronised: slower; the split is what counts)"
    SDW_PROFILE=1 t 120 $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 1 --tag sd15prof
fi
if has two; then
    echo "== two engines on one GPU at once (two processes, same job): both images equal the single run's"
    mkdir -p /tmp/w1 /tmp/w2
    $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 2 --out /tmp/w1 --tag w1 > /tmp/w1/log 2>&1 &
    p1=$!
    $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 2 --out /tmp/w2 --tag w2 > /tmp/w2/log 2>&1 &
    p2=$!
    wait $p1; r1=$?; wait $p2; r2=$?
    cat /tmp/w1/log /tmp/w2/log
    echo "rcs $r1 $r2"
    for w in w1 w2; do cmp $OUT/sd15_512.png /tmp/$w/${w}_512.png && echo "$w: the same bytes as the single run"; done
fi
if has serve; then
    echo "== the service: two kind: cuda workers on GPU 0, two A1111 txt2img requests at once"
    cat > /tmp/sdw.yaml <<YAML
listen: "127.0.0.1:18080"
model:
  path: $M15
devices:
  - { kind: cuda, gpu: 0 }
  - { kind: cuda, gpu: 0 }
YAML
    $D/bin/sd-worker serve --config /tmp/sdw.yaml > $OUT/serve.log 2>&1 &
    sv=$!
    timeout 90 python3 - <<'PY'
import json, threading, time, urllib.request
U = "http://127.0.0.1:18080"
def get(p):
    with urllib.request.urlopen(U + p, timeout=30) as r:
        return r.read().decode()
t0 = time.time()
while True:
    try:
        r = json.loads(get("/ready"))
        if r.get("ready") and all(w.get("state") == "ready" for w in r["workers"]) and len(r["workers"]) == 2:
            break
    except Exception:
        pass
    time.sleep(0.2)
print(f"ready after {time.time() - t0:.1f} s:", json.dumps(r))
print("\n".join(l for l in get("/metrics").splitlines() if "vram" in l))
out = {}
def job(i):
    body = json.dumps({"prompt": "a photo of a cat", "steps": 20, "width": 512, "height": 512,
                       "cfg_scale": 7, "sampler_name": "Euler", "seed": 42 + i}).encode()
    rq = urllib.request.Request(U + "/sdapi/v1/txt2img", body, {"Content-Type": "application/json"})
    s = time.time()
    with urllib.request.urlopen(rq, timeout=60) as r:
        d = json.loads(r.read())
    out[i] = (time.time() - s, len(d.get("images", [""])[0]))
for n in (1, 2):
    th = [threading.Thread(target=job, args=(i,)) for i in range(n)]
    s = time.time()
    [x.start() for x in th]; [x.join() for x in th]
    print(f"{n} request(s) at once: {time.time() - s:.2f} s wall;", {k: (round(v[0], 2), v[1]) for k, v in out.items()})
r = json.loads(get("/ready"))
print("after:", [(w["device"], w["state"], w.get("jobs_served"), w.get("vram_free_bytes")) for w in r["workers"]])
PY
    echo "[client rc=$?]"
    kill -TERM $sv; wait $sv; echo "[supervisor exit $?]"
    grep -E "worker_spawn|worker_ready|error|job_done" $OUT/serve.log | head -12
fi
MXL=$T/randsdxl-s1-f16.safetensors
if has xl; then
    wait $mkxl; tail -1 $OUT/mkmodel_xl.log
    echo "== SDXL goldens on the GPU"
    SDW_MANUAL_TESTS=1 SDW_SDXL_MODEL=$MXL t 180 $D/bin/test_golden_sdxl_e2e | grep -E "SDXL|FAIL|PASSED|rc="
    echo "== SDXL 1024x1024, 20 steps"
    t 120 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 2 --out $OUT --tag sdxl
    SDW_PROFILE=1 t 120 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 1 --tag sdxlprof
fi
if has half; then
    echo "== SDW_CUDA_HALF=1 (FP16 operands for linear layers and gathered convolutions) against the default"
    SDW_CUDA_HALF=1 t 60 $D/bin/test_backend_cuda | grep -E "FAIL|cases|PASSED|rc="
    for g in test_golden_sd15_e2e test_golden_sd15_lora; do
        SDW_CUDA_HALF=1 t 120 $D/bin/$g | grep -E "vs peer|FAIL|PASSED|rc="
    done
    for h in 0 1 0 1; do
        SDW_CUDA_HALF=$h t 60 $D/bin/gpu_bench --model $M15 --size 512 --steps 20 --runs 3 --out $OUT \
            --tag sd15_half$h | grep -E "best|run 3"
    done
    if has xlhalf; then
        wait $mkxl; tail -1 $OUT/mkmodel_xl.log
        SDW_CUDA_HALF=1 SDW_MANUAL_TESTS=1 SDW_SDXL_MODEL=$MXL t 180 $D/bin/test_golden_sdxl_e2e |
            grep -E "SDXL|FAIL|PASSED|rc="
        for h in 0 1 0 1; do
            SDW_CUDA_HALF=$h t 60 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 1 --out $OUT \
                --tag sdxl_half$h | grep -E "run 1|VRAM"
        done
        SDW_PROFILE=1 SDW_CUDA_HALF=1 t 120 $D/bin/gpu_bench --model $MXL --size 1024 --steps 20 --runs 1 \
            --tag sdxlprof_half1 | grep -E "^(model|clip|unet|vae|\(no|conv|linear|attention|gn_) "
    fi
fi
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
echo "== done in $SECONDS s"
