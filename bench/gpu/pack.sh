#!/bin/sh
# bench/gpu/pack.sh: builds the CUDA engine, its tests and gpu_bench here (nvcc, no GPU needed) into
# build-cuda/, and packs what a GPU machine without this machine's libraries needs to run them into
# .dev/pkg.tar.xz: the programs and the Debian 12 shared libraries they use beyond the C/C++ runtime.
# bench/gpu/run.sh unpacks and runs it there (the device call in docs/backends.md).
set -eu
cd "$(dirname "$0")/../.."
B=build-cuda
cmake -S . -B $B -DSDW_CUDA=ON -DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
progs="sd-worker sd-worker-engine gpu_bench sdw-cuda-info test_backend_cuda test_golden_sd15_e2e test_golden_sd21_e2e
       test_golden_sdxl_e2e test_golden_sd15_lora test_golden_sd15_img2img test_golden_sd15_taesd"
cmake --build $B -j"${JOBS:-2}" --target $progs
rm -rf .dev/pkg && mkdir -p .dev/pkg/bin .dev/pkg/lib
for p in $progs; do
    [ -x $B/$p ] && cp $B/$p .dev/pkg/bin/
done
# the libraries a CUDA image (Ubuntu) may lack: OpenBLAS and its Fortran runtime, libpng, jansson, utf8proc,
# cmocka, msgpack-c, libyaml, libh2o and wslay; libc, libstdc++, libz, libssl and libcrypto are the machine's own
for l in $(ldd .dev/pkg/bin/* 2>/dev/null | awk '/=>/ {print $3}' | sort -u); do
    case "$(basename "$l")" in
    libopenblas* | libgfortran* | libquadmath* | libpng16* | libjansson* | libutf8proc* | libcmocka* | \
        libmsgpackc* | libyaml* | libh2o* | libwslay*)
        cp -L "$l" .dev/pkg/lib/ ;;
    esac
done
strip --strip-debug .dev/pkg/bin/* .dev/pkg/lib/* 2>/dev/null || true
tar -C .dev -cJf .dev/pkg.tar.xz pkg
rm -rf .dev/pkg
ls -la .dev/pkg.tar.xz
