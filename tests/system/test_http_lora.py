"""test_http_lora.py: LoRA over HTTP with the real worker and the tiny (float32) model: a LoRA named in the
"loras" list or as a <lora:NAME:W> prompt tag changes the image, a job without it afterwards gives the same
bytes as one before it (the weights are restored exactly), and bad names are a 400 naming the field."""
import json
import os
import random
import struct

import sdw
from sdw import Service, expect


def write_lora(path):
    """A kohya LoRA for the tiny text encoder's first q_proj (64 wide, rank 4) plus one key nothing uses."""
    rnd = random.Random(1)
    mod = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    tensors = [(mod + ".lora_down.weight", [4, 64]), (mod + ".lora_up.weight", [64, 4]), (mod + ".alpha", []),
               ("lora_unet_nothing_here.lora_down.weight", [4, 4])]
    header, data = {}, b""
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        vals = [4.0] if name.endswith(".alpha") else [rnd.gauss(0, 2) for _ in range(n)]
        blob = struct.pack("<%df" % n, *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def image(svc, **params):
    job = svc.submit(**params)
    doc = svc.wait_status(job["job_id"], ("complete", "failed"))
    expect(doc["status"] == "complete", "job %r" % doc, svc)
    st, _, png = svc.request("GET", doc["image_url"])
    expect(st == 200, "image %s" % st, svc)
    return png


def test_lora():
    if sdw.FAKE:
        sdw.skip("needs the real engine")
    d = os.path.join(sdw.TMP, "lora-systest")
    os.makedirs(d, exist_ok=True)
    write_lora(os.path.join(d, "style.safetensors"))
    with Service("lora", extra={"model": {"path": sdw.tiny_model(), "lora_dir": d}}) as svc:
        svc.wait_ready()
        base = dict(prompt="a cat", steps=3, width=64, height=64, seed=5)
        before = image(svc, **base)
        listed = image(svc, loras=[{"name": "style", "weight": 1.0}], **base)
        tagged = image(svc, **dict(base, prompt="a cat<lora:style:1>"))
        after = image(svc, **base)
        expect(listed != before, "the LoRA changed nothing", svc)
        expect(after == before, "the weights were not restored exactly", svc)
        expect(tagged != before, "the prompt tag changed nothing", svc)
        for extra, field in [(dict(loras=[{"name": "absent"}]), "loras"), (dict(loras=[{"name": "../style"}]), "loras"),
                             (dict(prompt="x <lora:absent:1>"), "prompt")]:
            st, _, doc = svc.json("POST", "/v1/jobs", dict(base, **extra))
            expect(st == 400 and doc["error"]["field"] == field, "%r -> %s %r" % (extra, st, doc), svc)


if __name__ == "__main__":
    sdw.main([test_lora])
