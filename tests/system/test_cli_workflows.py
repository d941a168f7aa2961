"""test_cli_workflows.py: `sd-worker generate` img2img / inpainting / LoRA / preview options on the tiny
model: each changes or adds output as it should, and a bad value exits 1 naming the option."""
import os
import subprocess
import sys
import tempfile

BUILD = os.environ.get("SDW_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
EXE = os.path.join(BUILD, "sd-worker")
GOLDEN = os.path.join(SRC, "tests", "data", "golden", "sd15-rand", "inpaint")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*args):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)


def main():
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "tiny.safetensors")
        r = run("mkmodel", "--preset", "tiny", "--output", model)
        check(r.returncode == 0, "mkmodel tiny")
        init, mask = os.path.join(GOLDEN, "init.png"), os.path.join(GOLDEN, "mask.png")
        base = ["generate", "--model", model, "--prompt", "a cat", "--steps", "4", "--seed", "3", "--output"]

        def img(name, *extra):
            out = os.path.join(d, name)
            r = run(*base, out, *extra)
            check(r.returncode == 0, "generate %s: exit 0 (%s)" % (name, r.stderr.strip()[-200:]))
            return open(out, "rb").read() if r.returncode == 0 else b""

        t2i = img("t2i.png")
        i2i = img("i2i.png", "--init-image", init, "--strength", "0.5")
        inp = img("inp.png", "--init-image", init, "--mask", mask, "--strength", "1", "--mask-blur", "3")
        check(len({t2i, i2i, inp}) == 3, "img2img and inpainting differ from text-to-image and each other")
        pdir = os.path.join(d, "prev")
        os.mkdir(pdir)
        img("prev.png", "--steps", "8", "--preview-every", "4", "--preview-dir", pdir)
        check(sorted(os.listdir(pdir)) == ["preview-004.png", "preview-008.png"], "previews every 4 of 8 steps")

        # a batch: OUT.png, OUT-1.png, OUT-2.png, seeds 3, 4, 5, each path on its own stdout line
        out = os.path.join(d, "batch.png")
        r = run(*base, out, "--n", "3")
        names = [os.path.join(d, n) for n in ("batch.png", "batch-1.png", "batch-2.png")]
        check(r.returncode == 0 and r.stdout.split() == names, "--n 3 writes %r (%s)" % (r.stdout.split(), r.stderr[-200:]))
        if r.returncode == 0:
            pngs = [open(n, "rb").read() for n in names]
            check(len(set(pngs)) == 3, "three different images")
            check(all(b"Seed: %d," % (3 + i) in pngs[i] for i in range(3)), "seeds 3, 4, 5 in the parameters")
        r = run(*base, os.path.join(d, "noext"), "--n", "2")
        check(r.returncode == 0 and os.path.exists(os.path.join(d, "noext-1")), "--n 2 without extension: noext-1")

        for extra, opt in [(["--init-image", init, "--strength", "0"], "--strength"),
                           (["--init-image", init, "--strength", "abc"], "--strength"),
                           (["--init-image", os.path.join(GOLDEN, "README.md")], "--init-image"),
                           (["--init-image", os.path.join(d, "absent.png")], "--init-image"),
                           (["--mask", mask], "--mask"),
                           (["--init-image", init, "--mask", mask, "--mask-blur", "99"], "--mask-blur"),
                           (["--prompt", "a <lora:x:1>"], "--prompt"),
                           (["--prompt", "a <lora:../x:1>", "--lora-dir", d], "--prompt"),
                           (["--preview-every", "-1"], "--preview-every"),
                           (["--n", "0"], "--n"),
                           (["--n", "17"], "--n")]:
            r = run(*base, os.path.join(d, "bad.png"), *extra)
            check(r.returncode == 1 and opt in r.stderr, "%r -> exit 1 naming %s (%d: %s)" % (extra, opt, r.returncode,
                                                                                             r.stderr.strip()[-160:]))
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
