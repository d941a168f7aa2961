"""test_api_openai.py: the OpenAI Images routes without an SDK: answer shapes, quality to steps, the
url's lifetime, refused fields with OpenAI's error shape, the multipart checks of /v1/images/edits
before its 501, and the job behind an answer being an ordinary /v1/jobs job."""
import base64
import json

import sdw
from sdw import Service, expect


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
                (dict(prompt="x", steps=0), 400, "steps"), (dict(prompt="x", stream="yes"), 400, "stream")):
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


def test_edits():
    with Service("oaiedit").start() as svc:
        svc.wait_ready()
        ct = {"Content-Type": "multipart/form-data; boundary=zz9"}
        png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
        st, _, body = svc.request("POST", "/v1/images/edits", body=multipart("zz9", [("image", png, "a.png"), ("prompt", b"x", None)]), headers=ct)
        d = json.loads(body)
        expect(st == 501 and "img2img" in d["error"]["message"], "edit %s %r" % (st, d))
        st, _, body = svc.request("POST", "/v1/images/variations", body=multipart("zz9", [("image", png, "a.png")]), headers=ct)
        expect(st == 501, "variation %s" % st)
        st, _, body = svc.request("POST", "/v1/images/edits", body=multipart("zz9", [("prompt", b"x", None)]), headers=ct)
        expect(st == 400 and json.loads(body)["error"]["param"] == "image", "no image %s %r" % (st, body))
        st, _, body = svc.request("POST", "/v1/images/edits", body=multipart("zz9", [("image", png, "a.png")]), headers=ct)
        expect(st == 400 and json.loads(body)["error"]["param"] == "prompt", "no prompt %s %r" % (st, body))
        st, _, body = svc.request("POST", "/v1/images/edits", body=b"--zz9\r\nbroken", headers=ct)
        expect(st == 400 and json.loads(body)["error"]["code"] == "invalid_multipart", "broken %s %r" % (st, body))
        st, _, body = svc.request("POST", "/v1/images/edits", body=b"{}", headers={"Content-Type": "application/json"})
        expect(st == 400 and "multipart" in json.loads(body)["error"]["message"], "json %s %r" % (st, body))


if __name__ == "__main__":
    sdw.main([test_generations, test_errors, test_edits])
