"""test_api_a1111.py: the AUTOMATIC1111 API subset under /sdapi/v1: txt2img answers and their shape,
sampler and scheduler names, refused and ignored fields, progress and interrupt of a running job, the
lists and options, img2img and inpainting (each exactly the /v1/jobs job it stands for, the mask's
conventions, the echo and info), and errors naming the field."""
import base64
import json
import struct
import threading
import time
import zlib

import sdw
from sdw import Service, expect


def txt2img(svc, **body):
    return svc.json("POST", "/sdapi/v1/txt2img", body)


def test_txt2img_shape():
    with Service("a1111").start() as svc:
        svc.wait_ready()
        st, _, d = txt2img(svc, prompt="a tree", negative_prompt="fog", steps=2, width=64, height=64, cfg_scale=5,
                           seed=-1, sampler_name="DPM++ 2M Karras", restore_faces=False, tiling=False,
                           enable_hr=False, styles=[], override_settings={}, save_images=True, comments={"x": 1},
                           something_new=1)
        expect(st == 200, "txt2img %s %r" % (st, d), svc)
        expect(set(d) == {"images", "parameters", "info"}, "keys %r" % list(d))
        expect(len(d["images"]) == 1, "one image")
        sdw.check_png(base64.b64decode(d["images"][0]), 64, 64)
        info = json.loads(d["info"])
        expect(info["sampler_name"] == "DPM++ 2M" and info["scheduler"] == "Karras", "info %r" % info)
        expect(info["seed"] != -1 and info["all_seeds"] == [info["seed"]], "drawn seed %r" % info)
        expect(info["negative_prompt"] == "fog" and info["steps"] == 2 and info["cfg_scale"] == 5, "info %r" % info)
        expect("Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5" in info["infotexts"][0], info["infotexts"][0])
        p = d["parameters"]
        expect(p["seed"] == info["seed"] and p["prompt"] == "a tree" and p["sampler_name"] == "DPM++ 2M", "parameters %r" % p)
        # the same seed gives the same image; scheduler given apart from the sampler
        a = txt2img(svc, prompt="a tree", steps=2, width=64, height=64, seed=11, sampler_name="Euler a", scheduler="Karras")[2]
        b = txt2img(svc, prompt="a tree", steps=2, width=64, height=64, seed=11, sampler_name="euler_a", scheduler="karras")[2]
        expect(a["images"] == b["images"], "display and canonical names mean the same job")
        expect(json.loads(a["info"])["scheduler"] == "Karras", a["info"])
        st, _, d = txt2img(svc, prompt="x", steps=2, width=64, height=64, send_images=False)
        expect(st == 200 and d["images"] == [], "send_images false %r" % d)
        # a batch: batch_size * n_iter images, one job, consecutive seeds
        st, _, d = txt2img(svc, prompt="a tree", steps=2, width=64, height=64, seed=20, batch_size=2, n_iter=2)
        info = json.loads(d["info"]) if st == 200 else {}
        expect(st == 200 and len(d["images"]) == 4 and len(set(d["images"])) == 4, "batch of 4: %s" % st, svc)
        expect(info.get("all_seeds") == [20, 21, 22, 23] and info["seed"] == 20 and info["batch_size"] == 2 and
               info["n_iter"] == 2 and len(info["all_prompts"]) == 4, "batch info %r" % info, svc)
        expect(len(info["infotexts"]) == 4 and "Seed: 23," in info["infotexts"][3], "infotexts %r" % info["infotexts"])
        for i, img in enumerate(d["images"]):
            png = base64.b64decode(img)
            sdw.check_png(png, 64, 64)
            expect(sdw.FAKE or b"Seed: %d," % (20 + i) in png, "image %d has seed %d" % (i, 20 + i))
        # the seed-21 image of the batch is a job of its own with seed 21 (within 1/255: same seed text)
        one = json.loads(txt2img(svc, prompt="a tree", steps=2, width=64, height=64, seed=21)[2]["info"])
        expect(one["all_seeds"] == [21], "single %r" % one)
        expect("Precision" not in one["infotexts"][0], "fp32 infotext %r" % one["infotexts"][0])
        # precision, our extension: a bf16 job says so in its infotext and its PNG where it ran in bf16
        st, _, d = txt2img(svc, prompt="a tree", steps=1, width=64, height=64, seed=21, precision="bf16")
        bf16 = sdw.FAKE or any(line.startswith("flags") and "avx512_bf16" in line.split() for line in open("/proc/cpuinfo"))
        text = json.loads(d["info"])["infotexts"][0] if st == 200 else ""
        expect(st == 200 and text.endswith(", Precision: bf16") == bf16, "bf16 infotext %s %r" % (st, text), svc)
        expect(sdw.FAKE or (b"Precision: bf16, Version" in base64.b64decode(d["images"][0])) == bf16,
               "bf16 PNG parameters", svc)


def test_txt2img_errors():
    with Service("a1111err").start() as svc:
        svc.wait_ready()
        cases = [
            (dict(batch_size=0), "batch_size"), (dict(n_iter=2.5), "n_iter"), (dict(batch_size=3, n_iter=2), "batch_size"),
            (dict(batch_size=17), "batch_size"), (dict(enable_hr=True), "enable_hr"),
            (dict(restore_faces=True), "restore_faces"), (dict(styles=["s"]), "styles"),
            (dict(sampler_name="UniPC"), "sampler_name"), (dict(scheduler="Polyexponential"), "scheduler"),
            (dict(width=63), "width"), (dict(cfg_scale=99), "cfg_scale"), (dict(steps=0), "steps"),
            (dict(subseed_strength=0.5), "subseed_strength"), (dict(prompt=""), "prompt"),
            (dict(precision="fp16"), "precision"), (dict(precision=1), "precision"),
        ]
        for extra, field in cases:
            body = dict(prompt="x", steps=2, width=64, height=64)
            body.update(extra)
            st, _, d = svc.json("POST", "/sdapi/v1/txt2img", body)
            expect(st == 400 and d["field"] == field and d["detail"], "%r -> %s %r" % (extra, st, d), svc)
        st, h, d = svc.json("GET", "/sdapi/v1/txt2img")
        expect(st == 405 and h.get("allow") == "POST", "GET txt2img %s %r" % (st, h))
        st, _, d = svc.json("GET", "/sdapi/v1/nothing")
        expect(st == 404, "unknown %s" % st)
        st, _, d = svc.request("POST", "/sdapi/v1/txt2img", body="{nope")[:3]
        expect(st == 400, "bad json %s" % st)


def png(w, h, pixel, mode="RGB"):
    """A w x h 8-bit PNG of mode L, RGB or RGBA; pixel(x, y) gives the channel tuple."""
    ct, nch = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}[mode]

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\0" + b"".join(bytes(pixel(x, y)[:nch]) for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ct, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def b64(data):
    return base64.b64encode(data).decode()


def job_png(svc, **params):
    job = svc.submit(**params)
    doc = svc.wait_status(job["job_id"], ("complete", "failed"))
    expect(doc["status"] == "complete", "job %r" % doc, svc)
    return svc.request("GET", doc["image_url"])[2]


def test_img2img():
    if sdw.FAKE:
        sdw.skip("needs the real engine")
    with Service("a1111i2i").start() as svc:
        svc.wait_ready()
        image = png(64, 64, lambda x, y: ((x * 4) % 256, (y * 4) % 256, 128))
        white_top = png(64, 64, lambda x, y: (255,) if y < 32 else (0,), "L")
        black_top = png(64, 64, lambda x, y: (0, 0, 0) if y < 32 else (255, 255, 255))
        rgba_top = png(64, 64, lambda x, y: (0, 0, 0, 255) if y < 32 else (0, 0, 0, 0), "RGBA")
        base = dict(prompt="a cat", steps=2, width=64, height=64, seed=9)
        # the shape, as txt2img's; the echo leaves the images out, info has A1111's img2img keys
        st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, init_images=["data:image/png;base64," + b64(image)],
                                                               denoising_strength=0.5, sampler_name="Euler a",
                                                               cfg_scale=5, resize_mode=0, inpainting_fill=1,
                                                               include_init_images=False))
        expect(st == 200 and set(d) == {"images", "parameters", "info"} and len(d["images"]) == 1, "img2img %s %r" % (st, d), svc)
        got = base64.b64decode(d["images"][0])
        sdw.check_png(got, 64, 64)
        info = json.loads(d["info"])
        expect(info["denoising_strength"] == 0.5 and info["sampler_name"] == "Euler a" and info["seed"] == 9, "info %r" % info)
        expect("Denoising strength: 0.5" in info["infotexts"][0] and "Mask blur" not in info["infotexts"][0], info["infotexts"][0])
        expect(d["parameters"]["init_images"] is None and d["parameters"]["denoising_strength"] == 0.5, "echo %r" % d["parameters"])
        expect(got == job_png(svc, init_image=b64(image), strength=0.5, sampler="euler_a", guidance_scale=5, **base),
               "img2img is the /v1/jobs job", svc)
        # inpainting: white = repaint, mask_blur 4 unless told; inverted black mask and RGBA alpha say the same
        want = job_png(svc, init_image=b64(image), mask=b64(white_top), strength=0.75, mask_blur=4, **base)
        for mask, extra in ((white_top, {}), (black_top, {"inpainting_mask_invert": 1}), (rgba_top, {}),
                            (b64(white_top), {"mask_blur_x": 4, "mask_blur_y": 4})):
            body = dict(base, init_images=[b64(image)], mask=mask if isinstance(mask, str) else b64(mask), **extra)
            if extra.get("mask_blur_x"):
                body["mask"] = "data:image/png;base64," + mask
            st, _, d = svc.json("POST", "/sdapi/v1/img2img", body)
            expect(st == 200 and base64.b64decode(d["images"][0]) == want, "inpaint %r %s" % (sorted(extra), st), svc)
            expect("Mask blur: 4" in json.loads(d["info"])["infotexts"][0] and d["parameters"]["mask"] is None, d["info"])
        st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, init_images=[b64(image)], mask=b64(white_top),
                                                               mask_blur=0, denoising_strength=1))
        expect(base64.b64decode(d["images"][0]) ==
               job_png(svc, init_image=b64(image), mask=b64(white_top), strength=1.0, **base), "mask_blur 0", svc)
        # a batch of img2img: batch_size 2 gives two images, seeds 9 and 10
        st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, init_images=[b64(image)], batch_size=2))
        expect(st == 200 and len(d["images"]) == 2 and json.loads(d["info"])["all_seeds"] == [9, 10],
               "img2img batch_size 2 %s" % st, svc)
        # (batched GEMMs round differently, so image 0 is within 1/255 of the single job, not byte-equal:
        # tests/engine/test_batch_tiny.c checks that; here the two seeds must give two images)
        for im in d["images"]:
            sdw.check_png(base64.b64decode(im), 64, 64)
        expect(d["images"][0] != d["images"][1], "img2img batch: two seeds, two images", svc)
        # resize_mode other than 0 only matters (and is refused) when the image needs resizing
        st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, init_images=[b64(image)], resize_mode=1))
        expect(st == 200, "resize_mode 1 at the image's size %s" % st, svc)

        cases = [
            (dict(), "init_images"), (dict(init_images=[]), "init_images"), (dict(init_images="x"), "init_images"),
            (dict(init_images=[b64(image), b64(image)]), "init_images"), (dict(init_images=["bm90IGEgcG5n"]), "init_images"),
            (dict(init_images=[b64(image)], denoising_strength=0), "denoising_strength"),
            (dict(init_images=[b64(image)], denoising_strength=1.5), "denoising_strength"),
            (dict(init_images=[b64(image)], mask=b64(png(32, 32, lambda x, y: (255,), "L"))), "mask"),
            (dict(init_images=[b64(image)], mask="***"), "mask"),
            (dict(init_images=[b64(image)], mask=b64(b"not a png")), "mask"),
            (dict(init_images=[b64(image)], mask=b64(white_top), mask_blur=99), "mask_blur"),
            (dict(init_images=[b64(image)], mask=b64(white_top), mask_blur_x=2, mask_blur_y=3), "mask_blur_y"),
            (dict(init_images=[b64(image)], inpainting_mask_invert=2), "inpainting_mask_invert"),
            (dict(init_images=[b64(png(80, 64, lambda x, y: (0, 0, 0)))], resize_mode=1), "resize_mode"),
            (dict(init_images=[b64(image)], resize_mode=7), "resize_mode"),
            (dict(init_images=[b64(image)], initial_noise_multiplier=0.5), "initial_noise_multiplier"),
            (dict(init_images=[b64(image)], batch_size=5), "batch_size"),
            (dict(init_images=[b64(image)], cfg_scale=99), "cfg_scale"),
        ]
        for extra, field in cases:
            st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, **extra))
            expect(st == 400 and d["field"] == field and d["detail"], "%r -> %s %r" % (sorted(extra), st, d), svc)
        st, h, d = svc.json("GET", "/sdapi/v1/img2img")
        expect(st == 405 and h.get("allow") == "POST", "GET img2img %s" % st)
        st, _, d = svc.json("POST", "/sdapi/v1/img2img", dict(base, init_images=[b64(image)], pad="x" * 70000))
        expect(st == 413, "over limits.max_body_bytes %s %r" % (st, d), svc)


def test_lists_and_options():
    with Service("a1111lists").start() as svc:
        svc.wait_ready()
        st, _, models = svc.json("GET", "/sdapi/v1/sd-models")
        expect(st == 200 and models[0]["model_name"] == "systest-tiny" and models[0]["title"], "models %r" % models)
        _, _, samplers = svc.json("GET", "/sdapi/v1/samplers")
        names = [s["name"] for s in samplers]
        expect("Euler a" in names and "DPM++ 2M" in names and all("aliases" in s and "options" in s for s in samplers),
               "samplers %r" % samplers)
        _, _, sch = svc.json("GET", "/sdapi/v1/schedulers")
        expect({"automatic", "karras", "discrete"} <= {s["name"] for s in sch} and
               any(s["label"] == "Karras" for s in sch), "schedulers %r" % sch)
        st, _, loras = svc.json("GET", "/sdapi/v1/loras")
        expect(st == 200 and loras == [], "loras %r" % loras)
        st, _, opts = svc.json("GET", "/sdapi/v1/options")
        expect(st == 200 and opts["sd_model_checkpoint"] == "systest-tiny", "options %r" % opts)
        st, _, _ = svc.json("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "systest-tiny"})
        expect(st == 200, "setting the same model %s" % st)
        st, _, d = svc.json("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "other"})
        expect(st == 400 and d["field"] == "sd_model_checkpoint", "other model %s %r" % (st, d))
        st, _, p = svc.json("GET", "/sdapi/v1/progress")
        expect(st == 200 and p["progress"] == 0 and p["current_image"] is None and p["state"]["job_count"] == 0,
               "idle progress %r" % p)


def test_progress_and_interrupt():
    with Service("a1111prog").start() as svc:
        svc.wait_ready()
        params = sdw.slow_job(6)
        out = {}

        def run():
            out["r"] = svc.json("POST", "/sdapi/v1/txt2img", dict(prompt="slow", steps=params["steps"],
                                                                   width=params["width"], height=params["height"]))

        t = threading.Thread(target=run)
        t.start()
        p = None
        deadline = time.time() + 60
        while time.time() < deadline:
            p = svc.json("GET", "/sdapi/v1/progress")[2]
            if p["progress"] > 0:
                break
            time.sleep(0.05)
        expect(0 < p["progress"] < 1 and p["state"]["sampling_steps"] == params["steps"] and p["state"]["job_count"] == 1
               and p["eta_relative"] >= 0 and p["state"]["job"].startswith("task("),
               "progress %r" % p, svc)
        # the service's default is a preview every 5 steps: before step 5 there is none; a poll that first
        # lands later may already see one, and then it must be a PNG
        cur = p["current_image"]
        expect((cur is None and p["state"]["sampling_step"] < 5)
               or (cur is not None and base64.b64decode(cur)[:8] == b"\x89PNG\r\n\x1a\n"),
               "current_image at step %d: %r" % (p["state"]["sampling_step"], (cur or "")[:40]), svc)
        # A1111's skip_current_image=true leaves it out whatever the step
        q = svc.json("GET", "/sdapi/v1/progress?skip_current_image=true")[2]
        expect(q["current_image"] is None and q["state"]["job_count"] == 1, "skip_current_image %r" % q, svc)
        st, _, _ = svc.json("POST", "/sdapi/v1/interrupt")
        expect(st == 200, "interrupt %s" % st)
        t.join(60)
        st, _, d = out["r"]
        expect(st == 200 and d["images"] == [] and json.loads(d["info"])["interrupted"] is True,
               "interrupted txt2img %s %r" % (st, d), svc)
        p = svc.json("GET", "/sdapi/v1/progress")[2]
        expect(p["state"]["job_count"] == 0, "after %r" % p)


if __name__ == "__main__":
    sdw.main([test_img2img, test_txt2img_shape, test_txt2img_errors, test_lists_and_options, test_progress_and_interrupt])
