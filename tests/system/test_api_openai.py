"""test_api_openai.py: the OpenAI Images routes without an SDK: answer shapes, quality to steps, the
url's lifetime, refused fields with OpenAI's error shape, /v1/images/edits (its alpha mask converted to
ours: an edit is exactly the /v1/jobs job it stands for; defaults; multipart and image errors; the body
limit), and the job behind an answer being an ordinary /v1/jobs job."""
import base64
import json
import struct
import zlib

import sdw
from sdw import Service, expect


def bf16_cpu():
    """The fake worker claims AVX512-BF16; the real one has it when /proc/cpuinfo says avx512_bf16."""
    return sdw.FAKE or any(line.startswith("flags") and "avx512_bf16" in line.split() for line in open("/proc/cpuinfo"))


def gen(svc, **body):
    return svc.json("POST", "/v1/images/generations", body)


def test_generations():
    with Service("oai").start() as svc:
        svc.wait_ready()
        st, _, d = gen(svc, prompt="a cube", size="64x64", quality="low", style="vivid", user="u1",
                       negative_prompt="fog", seed=5, sampler="euler_a", schedule="karras", guidance_scale=4)
        expect(st == 200 and set(d["data"][0]) == {"b64_json"} and d["size"] == "64x64", "answer %r" % d, svc)
        sdw.check_png(base64.b64decode(d["data"][0]["b64_json"]), 64, 64)
        st, _, d = gen(svc, prompt="a cube", size="64x64", quality="hd", response_format="url")
        url = d["data"][0]["url"]
        job = url.split("/v1/jobs/")[1].split("/")[0]
        st, _, doc = svc.json("GET", "/v1/jobs/" + job)
        expect(st == 200 and doc["params"]["steps"] == 40 and doc["status"] == "complete", "hd = 40 steps %r" % doc)
        st, h, png = svc.request("GET", url.split(str(svc.port))[1])
        expect(st == 200 and h["content-type"] == "image/png", "url %s" % st)
        st, _, doc = svc.json("GET", "/v1/jobs/" + gen(svc, prompt="x", size="64x64", steps=3, response_format="url")[2]["data"][0]["url"].split("/")[-2])
        expect(doc["params"]["steps"] == 3, "explicit steps win over quality")
        # precision, our extension: the job asks for bf16 and runs in it where the CPU has AVX512-BF16
        st, _, d = gen(svc, prompt="x", size="64x64", steps=1, precision="bf16", response_format="url")
        st, _, doc = svc.json("GET", "/v1/jobs/" + d["data"][0]["url"].split("/")[-2])
        expect(doc["params"]["precision"] == "bf16" and doc["precision"] == ("bf16" if bf16_cpu() else "fp32"),
               "precision bf16 %r %r" % (doc["params"], doc["precision"]), svc)


def test_errors():
    with Service("oaierr").start() as svc:
        svc.wait_ready()
        for body, status, param in (
                (dict(prompt="x", n=5), 400, "n"), (dict(prompt="x", n=0), 400, "n"),
                (dict(prompt="x", size="64"), 400, "size"),
                (dict(prompt="x", size="4096x64"), 400, "size"), (dict(prompt="x", model="sdxl"), 400, "model"),
                (dict(prompt="x", response_format="png"), 400, "response_format"),
                (dict(prompt="x", quality="ultra"), 400, "quality"), (dict(prompt="x", background="transparent"), 400, "background"),
                (dict(prompt="x", bogus=1), 400, "bogus"), (dict(size="64x64"), 400, "prompt"),
                (dict(prompt="x", steps=0), 400, "steps"), (dict(prompt="x", stream="yes"), 400, "stream"),
                (dict(prompt="x", precision="fp16"), 400, "precision"), (dict(prompt="x", precision=16), 400, "precision")):
            st, _, d = gen(svc, **body)
            expect(st == status and d["error"]["param"] == param and d["error"]["type"] == "invalid_request_error"
                   and d["error"]["message"] and "code" in d["error"], "%r -> %s %r" % (body, st, d), svc)
        st, h, d = svc.json("GET", "/v1/images/generations")
        expect(st == 405 and h.get("allow") == "POST" and "error" in d, "GET %s" % st)
        st, _, d = svc.json("GET", "/v1/images/nothing")
        expect(st == 404 and d["error"]["type"] == "not_found_error", "404 %r" % d)
        st, _, d = svc.json("GET", "/v1/models/other")
        expect(st == 404 and d["error"]["param"] == "model", "model 404 %r" % d)
        st, _, d = svc.request("POST", "/v1/images/generations", body="{", headers={"Content-Type": "application/json"})[:3]
        expect(st == 400, "bad json %s" % st)


def multipart(boundary, parts):
    out = b""
    for name, value, filename in parts:
        disp = 'form-data; name="%s"' % name + ('; filename="%s"' % filename if filename else "")
        out += b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disp.encode() + b"\r\n"
        if filename:
            out += b"Content-Type: image/png\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def png(w, h, pixel, mode="RGB"):
    """A w x h 8-bit PNG of mode L, RGB or RGBA; pixel(x, y) gives the channel tuple."""
    ct, nch = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}[mode]

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\0" + b"".join(bytes(pixel(x, y)[:nch]) for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ct, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def photo(x, y):
    return ((x * 4) % 256, (y * 4) % 256, 128, 255)


def top_half(x, y, inside, outside):
    return inside if y < 32 else outside


def edit(svc, fields, boundary="zz9"):
    parts = [(k, v if isinstance(v, bytes) else str(v).encode(), "f.png" if isinstance(v, bytes) else None)
             for k, v in fields]
    st, h, body = svc.request("POST", "/v1/images/edits", body=multipart(boundary, parts),
                              headers={"Content-Type": "multipart/form-data; boundary=" + boundary})[:3]
    try:
        return st, h, json.loads(body)
    except ValueError:
        return st, h, body


def job_png(svc, **params):
    job = svc.submit(**params)
    doc = svc.wait_status(job["job_id"], ("complete", "failed"))
    expect(doc["status"] == "complete", "job %r" % doc, svc)
    return svc.request("GET", doc["image_url"])[2]


def test_edits():
    if sdw.FAKE:
        sdw.skip("needs the real engine")
    with Service("oaiedit").start() as svc:
        svc.wait_ready()
        image = png(64, 64, photo)
        # OpenAI's mask: transparent = edit; ours: white = repaint
        mask = png(64, 64, lambda x, y: top_half(x, y, (0, 0, 0, 0), (0, 0, 0, 255)), "RGBA")
        white_top = png(64, 64, lambda x, y: top_half(x, y, (255,), (0,)), "L")
        b64 = lambda b: base64.b64encode(b).decode()
        common = [("prompt", "a cat"), ("steps", 2), ("seed", 9)]
        job = dict(prompt="a cat", steps=2, seed=9, width=64, height=64)

        # inpainting: the converted mask and strength 1.0, exactly the /v1/jobs job
        st, _, d = edit(svc, [("image", image), ("mask", mask)] + common)
        expect(st == 200 and d["size"] == "64x64" and len(d["data"]) == 1, "edit %s %r" % (st, d), svc)
        masked = base64.b64decode(d["data"][0]["b64_json"])
        sdw.check_png(masked, 64, 64)
        want = job_png(svc, init_image=b64(image), mask=b64(white_top), strength=1.0, **job)
        expect(masked == want, "an edit with an alpha mask is the /v1/jobs job with white = repaint", svc)
        # the image's own transparency is the mask when there is none
        holed = png(64, 64, lambda x, y: photo(x, y)[:3] + ((0,) if y < 32 else (255,)), "RGBA")
        st, _, d = edit(svc, [("image", holed)] + common)
        expect(st == 200 and base64.b64decode(d["data"][0]["b64_json"]) == want, "image alpha as mask %s" % st, svc)
        # no mask: img2img at strength 0.75; extension fields as form fields
        st, _, d = edit(svc, [("image", image), ("size", "64x64"), ("response_format", "url"),
                              ("negative_prompt", "fog"), ("guidance_scale", "5.5"), ("sampler", "euler_a")] + common)
        expect(st == 200 and "url" in d["data"][0], "unmasked %s %r" % (st, d), svc)
        got = svc.request("GET", d["data"][0]["url"].split(str(svc.port))[1])[2]
        expect(got == job_png(svc, init_image=b64(image), strength=0.75, negative_prompt="fog", guidance_scale=5.5,
                              sampler="euler_a", **job), "unmasked edit = img2img at 0.75", svc)
        st, _, d = edit(svc, [("image", image), ("strength", "0.5"), ("mask_blur", 2), ("mask", mask)] + common)
        expect(st == 200 and base64.b64decode(d["data"][0]["b64_json"]) ==
               job_png(svc, init_image=b64(image), mask=b64(white_top), strength=0.5, mask_blur=2, **job),
               "strength and mask_blur fields", svc)
        # an image with an alpha channel but nothing transparent: the whole image, at strength 1.0
        opaque = png(64, 64, photo, "RGBA")
        st, _, d = edit(svc, [("image", opaque)] + common)
        expect(st == 200 and base64.b64decode(d["data"][0]["b64_json"]) ==
               job_png(svc, init_image=b64(opaque), strength=1.0, **job), "opaque RGBA image %s" % st, svc)
        # the default size is the image's, scaled into the limits, in multiples of 8
        st, _, d = edit(svc, [("image", png(100, 76, photo)), ("prompt", "x"), ("steps", 1)])
        expect(st == 200 and d["size"] == "96x72", "default size %s %r" % (st, d), svc)

        cut = image[:60]
        # whole chunks, corrupt pixel data: only the worker's decoder sees it
        idat = image.index(b"IDAT")
        garbled = image[:idat + 4] + bytes(b ^ 0x5a for b in image[idat + 4:idat + 40]) + image[idat + 40:]
        bad = [
            ([("prompt", "x")], 400, "image"),
            ([("image", image)], 400, "prompt"),
            ([("image", b"not a png at all"), ("prompt", "x")], 400, "image"),
            ([("image", cut), ("prompt", "x")], 400, "image"),
            ([("image", garbled), ("prompt", "x")], 400, "image"),
            ([("image", image), ("mask", garbled), ("prompt", "x")], 400, "mask"),
            ([("image", image), ("mask", png(32, 32, lambda x, y: (0, 0, 0, 0), "RGBA")), ("prompt", "x")], 400, "mask"),
            ([("image", image), ("mask", b"GIF89a"), ("prompt", "x")], 400, "mask"),
            ([("image", image), ("mask", png(64, 64, lambda x, y: (9, 9, 9, 255), "RGBA")), ("prompt", "x")], 400, "mask"),
            ([("image", image), ("prompt", "x"), ("n", 5)], 400, "n"),
            ([("image", image), ("prompt", "x"), ("size", "63x64")], 400, "size"),
            ([("image", image), ("prompt", "x"), ("strength", 2)], 400, "strength"),
            ([("image", image), ("prompt", "x"), ("steps", "two")], 400, "steps"),
            ([("image", image), ("prompt", "x"), ("bogus", 1)], 400, "bogus"),
            ([("image", image), ("prompt", "x"), ("precision", "fp16")], 400, "precision"),
            ([("image", image), ("image", image), ("prompt", "x")], 400, "image"),
            ([("image", image), ("prompt", "x"), ("prompt", "y")], 400, "prompt"),
            ([("image", image), ("prompt", "x"), ("model", "sdxl")], 400, "model"),
        ]
        for fields, status, param in bad:
            st, _, d = edit(svc, fields)
            expect(st == status and isinstance(d, dict) and d["error"]["param"] == param and
                   d["error"]["type"] == "invalid_request_error" and d["error"]["message"],
                   "%r -> %s %r" % ([f[0] for f in fields], st, d), svc)

        ct = {"Content-Type": "multipart/form-data; boundary=zz9"}
        st, _, body = svc.request("POST", "/v1/images/variations", body=multipart("zz9", [("image", image, "a.png")]), headers=ct)
        expect(st == 501, "variation %s" % st)
        st, _, body = svc.request("POST", "/v1/images/edits", body=b"--zz9\r\nbroken", headers=ct)
        expect(st == 400 and json.loads(body)["error"]["code"] == "invalid_multipart", "broken %s %r" % (st, body))
        st, _, body = svc.request("POST", "/v1/images/edits", body=b"{}", headers={"Content-Type": "application/json"})
        expect(st == 400 and "multipart" in json.loads(body)["error"]["message"], "json %s %r" % (st, body))
        # limits.max_body_bytes (65536 here) holds for the form as for JSON: our 413 up to 4x, h2o's beyond
        big = [("image", image), ("prompt", "x"), ("pad", b"\0" * 70000)]
        st, _, d = edit(svc, big)
        expect(st == 413 and d["error"]["code"] == "body_too_large", "over the limit %s %r" % (st, d), svc)
        try:
            st = edit(svc, [("image", image), ("prompt", "x"), ("pad", b"\0" * 300000)])[0]
        except OSError:
            st = 413  # h2o may close the connection before the client has sent it all
        expect(st == 413, "far over the limit %s" % st, svc)
        st, _, d = svc.json("POST", "/v1/images/generations", {"prompt": "x" * 10, "pad": "y" * 70000})
        expect(st == 413, "JSON over the limit %s" % st, svc)
        expect(svc.proc.poll() is None, "service alive", svc)


if __name__ == "__main__":
    sdw.main([test_generations, test_errors, test_edits])
