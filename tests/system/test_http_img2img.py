"""test_http_img2img.py: img2img and inpainting over HTTP with the real worker and the tiny model: base64
PNG init_image and mask in the JSON body reach the worker (the result differs from text-to-image and is
repeatable), and a bad image, a mask of another size or a strength out of range is a 400 naming the field."""
import base64
import os
import struct
import zlib

import sdw
from sdw import Service, expect

GOLDEN = os.path.join(os.environ.get("SDW_SOURCE_DIR", "."), "tests", "data", "golden", "sd15-rand")


def b64(name):
    with open(os.path.join(GOLDEN, name), "rb") as f:
        return base64.b64encode(f.read()).decode()


def grey_png(w, h):
    """A w x h all-white 8-bit grey PNG, base64."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\0" + b"\xff" * w for _ in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def image_of(svc, **params):
    job = svc.submit(**params)
    doc = svc.wait_status(job["job_id"], ("complete", "failed"))
    expect(doc["status"] == "complete", "job %r" % doc, svc)
    st, _, png = svc.request("GET", doc["image_url"])
    expect(st == 200, "image %s" % st, svc)
    sdw.check_png(png, 64, 64)
    return png


def test_img2img_inpaint():
    if sdw.FAKE:
        sdw.skip("needs the real engine")
    init, mask = b64("inpaint/init.png"), b64("inpaint/mask.png")
    with Service("i2i", limits={"max_body_bytes": 1 << 20}) as svc:
        svc.wait_ready()
        base = dict(prompt="a cat", steps=4, width=64, height=64, seed=7)
        t2i = image_of(svc, **base)
        i2i = image_of(svc, init_image=init, strength=0.5, **base)
        i2i_again = image_of(svc, init_image="data:image/png;base64," + init, strength=0.5, **base)
        inp = image_of(svc, init_image=init, mask=mask, strength=1.0, mask_blur=2, **base)
        expect(i2i != t2i and inp != i2i and inp != t2i, "img2img/inpaint results equal text-to-image", svc)
        expect(i2i == i2i_again, "img2img not repeatable", svc)
        # an init image of another size is resized to the requested one
        image_of(svc, init_image=grey_png(100, 40), strength=0.8, **base)

        small = grey_png(32, 32)
        bad = [
            (dict(init_image="bm90IGEgcG5n"), "init_image"),
            (dict(init_image="***"), "init_image"),
            (dict(init_image=init, strength=0), "strength"),
            (dict(init_image=init, strength=1.5), "strength"),
            (dict(mask=mask), "mask"),
            (dict(init_image=init, mask=small), "mask"),
            (dict(init_image=init, mask="aGVsbG8="), "mask"),
            (dict(init_image=init, mask_blur=-1), "mask_blur"),
        ]
        for extra, field in bad:
            st, _, doc = svc.json("POST", "/v1/jobs", dict(base, **extra))
            expect(st == 400 and doc["error"]["field"] == field,
                   "%r -> %s %r" % (sorted(extra), st, doc), svc)


if __name__ == "__main__":
    sdw.main([test_img2img_inpaint])
