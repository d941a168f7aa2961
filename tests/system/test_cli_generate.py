"""test_cli_generate.py: the one-shot engine commands through the front door: `sd-worker mkmodel` and
`sd-worker generate` (exit codes, messages naming the option, PNG size and parameters chunk, determinism,
--precision)."""
import os
import struct
import subprocess
import sys
import tempfile
import zlib

BUILD = os.environ.get("SDW_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
EXE = os.path.join(BUILD, "sd-worker")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*args, timeout=120):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def png_info(path):
    """(width, height, {tEXt key: value}) of a PNG, checking every chunk CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, w, h, text = 8, None, None, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, "bad CRC"
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"tEXt":
            k, v = body.split(b"\0", 1)
            text[k.decode("latin-1")] = v.decode("latin-1")
        pos += 12 + n
    return w, h, text


def main():
    if not os.access(EXE, os.X_OK):
        print("skip: %s not built" % EXE)
        return 77
    with tempfile.TemporaryDirectory(dir=os.path.join(BUILD, "tmp") if os.path.isdir(os.path.join(BUILD, "tmp")) else None) as d:
        model = os.path.join(d, "tiny.safetensors")
        r = run("mkmodel", "--preset", "tiny", "--seed", "3", "--output", model)
        check(r.returncode == 0 and r.stdout.strip() == model, "mkmodel writes the tiny model and prints its path")
        m2 = os.path.join(d, "tiny2.safetensors")
        run("mkmodel", "--preset", "tiny", "--seed", "3", "--output", m2)
        check(open(model, "rb").read() == open(m2, "rb").read(), "mkmodel: same seed, byte-identical file")
        r = run("mkmodel", "--preset", "huge", "--output", m2)
        check(r.returncode == 1 and "--preset" in r.stderr, "mkmodel: unknown preset -> exit 1 naming --preset")
        r = run("mkmodel", "--preset", "tiny")
        check(r.returncode == 1 and "--output" in r.stderr, "mkmodel: missing --output -> exit 1")
        r = run("mkmodel", "--help")
        check(r.returncode == 0 and all(o in r.stdout for o in ("--preset", "--seed", "--output")), "mkmodel --help")

        r = run("tokenize", "a photo of a cat")
        check(r.returncode == 0 and r.stdout.strip() == "[320,1125,539,320,2368]",
              "tokenize: the built-in CLIP vocabulary without --tokenizer (%r)" % r.stdout)

        out = os.path.join(d, "a.png")
        base = ["generate", "--model", model, "--prompt", "a photo of a cat", "--steps", "3", "--cfg", "7",
                "--seed", "42", "--sampler", "euler_a", "--output", out]
        r = run(*base)
        check(r.returncode == 0 and r.stdout.strip() == out, "generate: exit 0, prints the output path")
        check("step 3/3" in r.stderr and "total" in r.stderr, "generate: progress and timings on stderr")
        w, h, text = png_info(out)
        check((w, h) == (64, 64), "generate: tiny model defaults to 64x64 (got %sx%s)" % (w, h))
        p = text.get("parameters", "")
        check(p.startswith("a photo of a cat\nSteps: 3, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7, "
                           "Seed: 42, Size: 64x64, Model hash: ") and ", Model: tiny, Version: sd-worker " in p,
              "generate: A1111 parameters chunk: %r" % p)
        first = open(out, "rb").read()
        r = run(*base)
        check(r.returncode == 0 and open(out, "rb").read() == first, "generate: same seed, same PNG bytes")
        check("Precision" not in p, "generate: an fp32 image's parameters say nothing of precision")

        # --precision: fp32 is the default, byte for byte; bf16 makes a PNG whose parameters say bf16 where the
        # CPU has AVX512-BF16, else it runs in fp32 with one warning line
        r = run(*base[:-2], "--precision", "fp32", "--output", out)
        check(r.returncode == 0 and open(out, "rb").read() == first, "generate --precision fp32: the default's bytes")
        bf16_cpu = any(line.startswith("flags") and "avx512_bf16" in line.split() for line in open("/proc/cpuinfo"))
        out16 = os.path.join(d, "bf16.png")
        r = run(*base[:-2], "--precision", "bf16", "--output", out16)
        check(r.returncode == 0 and r.stdout.strip() == out16, "generate --precision bf16: exit 0 (%d: %s)"
              % (r.returncode, r.stderr.strip()[-200:]))
        w, h, text = png_info(out16)
        p16 = text.get("parameters", "")
        check((w, h) == (64, 64) and ", Model: tiny, " in p16, "generate --precision bf16: a 64x64 PNG (%r)" % p16)
        check(("Precision: bf16, Version: sd-worker " in p16) == bf16_cpu,
              "generate --precision bf16: parameters say bf16 iff the CPU has avx512_bf16 (%s): %r" % (bf16_cpu, p16))
        warned = [line for line in r.stderr.splitlines() if "AVX512-BF16" in line]
        check(len(warned) == (0 if bf16_cpu else 1), "generate --precision bf16: fp32 fallback warning %r" % warned)
        r = run(*base[:-2], "--width", "96", "--height", "80", "--negative-prompt", "dark",
                "--schedule", "karras", "--output", out)
        w, h, text = png_info(out)
        check(r.returncode == 0 and (w, h) == (96, 80), "generate: --width/--height")
        check("\nNegative prompt: dark\n" in text.get("parameters", "") and "Karras" in text["parameters"],
              "generate: negative prompt and schedule in parameters")
        r = run("generate", "--model", model, "--prompt", "x", "--steps", "1", "--output", out)
        check(r.returncode == 0 and "seed " in r.stderr, "generate: no --seed draws one and prints it")

        bad = [
            (["--steps", "0"], "--steps", 1), (["--steps", "abc"], "--steps", 1), (["--cfg", "31"], "--cfg", 1),
            (["--cfg", "nan"], "--cfg", 1), (["--width", "100"], "--width", 1), (["--height", "4096"], "--height", 1),
            (["--sampler", "unipc"], "--sampler", 1), (["--schedule", "cosine"], "--schedule", 1),
            (["--seed", "-3"], "--seed", 1), (["--prediction", "x0"], "--prediction", 1), (["--threads", "0"], "--threads", 1),
            (["--bogus", "1"], "--bogus", 1), (["--precision", "fp16"], "--precision", 1),
            (["--precision", "BF16"], "--precision", 1), (["--precision", ""], "--precision", 1),
        ]
        for extra, name, code in bad:
            r = run(*base[:-2], *extra, "--output", out)
            check(r.returncode == code and name in r.stderr, "generate %s -> exit %d naming %s (%d: %s)"
                  % (" ".join(extra), code, name, r.returncode, r.stderr.strip()[:120]))
        r = run("generate", "--prompt", "x", "--output", out)
        check(r.returncode == 1 and "--model" in r.stderr, "generate: missing --model")
        r = run("generate", "--model", model, "--output", out)
        check(r.returncode == 1 and "--prompt" in r.stderr, "generate: missing --prompt")
        r = run("generate", "--model", model, "--prompt", "x")
        check(r.returncode == 1 and "--output" in r.stderr, "generate: missing --output")
        r = run("generate", "--model", model, "--prompt", "x", "--output", os.path.join(d, "no", "such", "dir.png"))
        check(r.returncode == 1 and "--output" in r.stderr, "generate: unwritable output fails before loading")
        r = run("generate", "--model", os.path.join(d, "missing.safetensors"), "--prompt", "x", "--output", out)
        check(r.returncode == 2 and "missing.safetensors" in r.stderr, "generate: model that fails to load -> exit 2")
        r = run("generate", "--model", model, "--tokenizer", os.path.join(d, "nothing"), "--prompt", "x", "--output", out)
        check(r.returncode == 2 and "nothing" in r.stderr, "generate: bad --tokenizer -> exit 2")
        r = run("generate", "--help")
        opts = ["--model", "--tokenizer", "--prompt", "--negative-prompt", "--steps", "--cfg", "--seed", "--sampler",
                "--schedule", "--width", "--height", "--threads", "--prediction", "--output", "--precision"]
        check(r.returncode == 0 and all(o in r.stdout for o in opts), "generate --help documents every option")
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
