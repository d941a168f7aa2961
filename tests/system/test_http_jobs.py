"""test_http_jobs.py: jobs end to end over HTTP with the real worker and the tiny model: a PNG of the
requested size (IHDR checked) through SSE, status and image routes; POST with Accept: text/event-stream;
several and late stream readers; a reader that leaves; 409 before completion; 410 after the TTL."""
import struct
import time

import sdw
from sdw import Service, expect


def test_job_end_to_end():
    with Service("e2e") as svc:
        svc.wait_ready()
        job = svc.submit(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=3, width=64, height=96,
                         seed=1234, guidance_scale=5, sampler="euler_a", schedule="karras")
        expect(job["job_id"].startswith("st-e2e-") and len(job["job_id"]) == len("st-e2e-") + 16, "id %r" % job, svc)
        expect(job["sse_url"] == "/v1/jobs/%s/stream" % job["job_id"] and job["status_url"] == "/v1/jobs/" + job["job_id"],
               "urls %r" % job, svc)
        expect(job["seed"] == 1234 and job["queue_position"] in (0, 1), "submit answer %r" % job, svc)
        events = svc.stream(job["sse_url"]).read_all()
        names = [e for e, _ in events]
        expect(names[-1] == "complete" and names.count("complete") == 1, "events %r" % names, svc)
        expect(names.count("progress") >= 1 and "started" in names, "events %r" % names, svc)
        steps = [d["step"] for e, d in events if e == "progress"]
        expect(steps == sorted(steps) and steps[-1] == 3 and all(d["total"] == 3 for e, d in events if e == "progress"),
               "progress %r" % steps, svc)
        done = events[-1][1]
        expect(done["format"] == "png" and done["seed"] == 1234 and done["width"] == 64 and done["height"] == 96,
               "complete %r" % {k: v for k, v in done.items() if k != "image"}, svc)
        sdw.check_b64png(done["image"], 64, 96)
        expect("total_s" in done["timings"], "timings %r" % done["timings"], svc)

        st, _, doc = svc.json("GET", job["status_url"])
        expect(st == 200 and doc["status"] == "complete" and doc["step"] == 3 and doc["error"] is None, "status %r" % doc, svc)
        p = doc["params"]
        expect(p["prompt"] == "a lighthouse at dusk" and p["negative_prompt"] == "blurry" and p["steps"] == 3 and
               p["guidance_scale"] == 5 and p["sampler"] == "euler_a" and p["schedule"] == "karras" and p["seed"] == 1234,
               "params %r" % p, svc)
        st, h, png = svc.request("GET", doc["image_url"])
        expect(st == 200 and h["content-type"] == "image/png", "image %s %r" % (st, h), svc)
        sdw.check_png(png, 64, 96)

        # the seed reaches the worker: the same seed gives the same image, another one a different one
        again = svc.submit(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=3, width=64, height=96,
                           seed=1234, guidance_scale=5, sampler="euler_a", schedule="karras")
        other = svc.submit(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=3, width=64, height=96,
                           seed=1235, guidance_scale=5, sampler="euler_a", schedule="karras")
        svc.wait_status(other["job_id"], ("complete",))
        svc.wait_status(again["job_id"], ("complete",))
        _, _, png2 = svc.request("GET", "/v1/jobs/%s/image" % again["job_id"])
        _, _, png3 = svc.request("GET", "/v1/jobs/%s/image" % other["job_id"])
        expect(png2 == png, "same seed, different image", svc)
        expect(png3 != png, "different seed, same image", svc)

        # a random seed is drawn and reported when none is given
        a = svc.submit(prompt="x", steps=1, width=64, height=64)
        b = svc.submit(prompt="x", steps=1, width=64, height=64)
        expect(isinstance(a["seed"], int) and a["seed"] != b["seed"] and 0 <= a["seed"] < 2**32 and 0 <= b["seed"] < 2**32,
               "random seeds (32-bit) %r %r" % (a, b), svc)
        svc.wait_status(b["job_id"], ("complete",))


def test_post_with_event_stream():
    with Service("post-sse") as svc:
        svc.wait_ready()
        s = svc.stream("/v1/jobs", method="POST", body={"prompt": "streamed", "steps": 2, "width": 64, "height": 64})
        expect(s.status == 200 and s.headers["content-type"].startswith("text/event-stream"),
               "POST SSE answer %s %r" % (s.status, s.headers), svc)
        events = s.read_all()
        first = events[0]
        expect(first[0] == "queued" and first[1]["job_id"].startswith("st-post-sse-") and "seed" in first[1],
               "first event %r" % (first,), svc)
        expect(events[-1][0] == "complete", "last event %r" % events[-1][0], svc)
        sdw.check_b64png(events[-1][1]["image"], 64, 64)
        # validation errors stay JSON errors even when the client asked for a stream
        st, h, data = svc.request("POST", "/v1/jobs", body={"prompt": ""}, headers={"Accept": "text/event-stream"})
        expect(st == 400 and h["content-type"].startswith("application/json"), "SSE POST error %s %r" % (st, h), svc)


def test_readers_and_conflicts():
    with Service("readers", queue={"result_ttl_s": 2}) as svc:
        svc.wait_ready()
        params = sdw.slow_job(3, prompt="watched by many")
        job = svc.submit(**params)
        jid = job["job_id"]
        readers = [svc.stream(job["sse_url"]) for _ in range(4)]
        # a reader that reads one event and leaves changes nothing for the job
        leaver = svc.stream(job["sse_url"])
        next(leaver)
        leaver.close()
        st, _, doc = svc.json("GET", "/v1/jobs/%s/image" % jid)
        expect(st == 409 and doc["error"]["code"] == "not_complete", "image before completion: %s %r" % (st, doc), svc)
        # a reader that joins mid-job first hears where it stands
        svc.wait_status(jid, ("running",))
        mid = svc.stream(job["sse_url"])
        first = next(mid)
        expect(first[0] in ("started", "queued", "progress"), "mid-job first event %r" % (first,), svc)
        for r in readers + [mid]:
            evs = r.read_all()
            terminal = [e for e, _ in evs if e in ("complete", "error", "cancelled")]
            expect(terminal == ["complete"], "reader got %r" % [e for e, _ in evs], svc)
        # a late reader gets the terminal event at once, and the stream ends
        late = svc.stream(job["sse_url"]).read_all()
        expect([e for e, _ in late] == ["complete"], "late reader %r" % [e for e, _ in late], svc)
        sdw.check_b64png(late[0][1]["image"], params["width"], params["height"])
        # after result_ttl_s the job is forgotten: 410 on every route
        time.sleep(3.5)
        for path in ("/v1/jobs/" + jid, "/v1/jobs/%s/stream" % jid, "/v1/jobs/%s/image" % jid):
            st, _, doc = svc.json("GET", path)
            expect(st == 410 and doc["error"]["code"] == "gone", "%s after TTL: %s %r" % (path, st, doc), svc)
        st, _, doc = svc.json("DELETE", "/v1/jobs/" + jid)
        expect(st == 410, "DELETE after TTL: %s" % st, svc)


def png_parameters(png):
    """The text of the PNG's tEXt chunk "parameters" (A1111's infotext), or None."""
    pos = 8
    while pos + 8 <= len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + n]
        if kind == b"tEXt" and body.startswith(b"parameters\0"):
            return body[len(b"parameters\0"):].decode("latin-1")
        pos += 12 + n
    return None


def test_turbo_recipe_and_sdxl_fields():
    """The turbo recipe (1 step, euler_a, guidance 0) from the job API, without a size (the model's native
    one), and the SDXL micro-conditioning fields: accepted, carried to the worker (other models ignore them:
    the same image), refused with a 400 naming the field when malformed."""
    with Service("turbo") as svc:
        ready = svc.wait_ready()
        native = ready["native_size"]
        job = svc.submit(prompt="a bowl of ramen", steps=1, guidance_scale=0, sampler="euler_a", seed=7)
        done = svc.wait_status(job["job_id"], ("complete",))
        expect(done["params"]["width"] == native and done["params"]["guidance_scale"] == 0, "turbo job %r" % done, svc)
        _, _, png = svc.request("GET", done["image_url"])
        if not sdw.FAKE:
            sdw.check_png(png, native, native)
            text = png_parameters(png) or ""
            expect("Steps: 1," in text and "CFG scale: 0," in text and "Sampler: Euler a" in text and "Model: " in text,
                   "parameters %r" % text, svc)
        xl = svc.submit(prompt="a bowl of ramen", steps=1, guidance_scale=0, sampler="euler_a", seed=7,
                        original_size=[2048, 1536], crops_coords_top_left=[0, 32], target_size=[1024, 1024])
        xdone = svc.wait_status(xl["job_id"], ("complete",))
        xp = xdone["params"]
        expect(xp["original_size"] == [2048, 1536] and xp["crops_coords_top_left"] == [0, 32] and
               xp["target_size"] == [1024, 1024], "params %r" % xp, svc)
        expect("original_size" not in done["params"], "unset micro-conditioning in params %r" % done["params"], svc)
        _, _, xpng = svc.request("GET", xdone["image_url"])
        if not sdw.FAKE:
            expect(xpng == png, "micro-conditioning changed a non-SDXL image", svc)
        for body, field in (({"prompt": "x", "original_size": [1024]}, "original_size"),
                            ({"prompt": "x", "crops_coords_top_left": [-1, 0]}, "crops_coords_top_left"),
                            ({"prompt": "x", "target_size": "1024x1024"}, "target_size")):
            st, _, doc = svc.json("POST", "/v1/jobs", body)
            expect(st == 400 and doc["error"]["field"] == field, "%r -> %s %r" % (body, st, doc), svc)


def cpu_has_bf16():
    """What the worker should report: AVX512-BF16 in /proc/cpuinfo (the fake worker always claims it)."""
    if sdw.FAKE:
        return True
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "avx512_bf16" in line.split() for line in f)
    except OSError:
        return False


def test_precision():
    """precision: a default job runs and reports fp32; one asking "bf16" completes and reports bf16 where
    the CPU has AVX512-BF16, else fp32 (params keep what was asked); the PNG parameters text says
    "Precision: bf16" only for a bf16 job; /ready says per worker whether it runs bf16; a bad value or type is
    a 400 naming precision; model.precision sets the default of jobs that give none."""
    bf16 = cpu_has_bf16()
    ran = "bf16" if bf16 else "fp32"
    with Service("precision") as svc:
        ready = svc.wait_ready()
        expect(ready["workers"] and all(w["bf16"] is bf16 for w in ready["workers"]), "ready %r" % ready, svc)
        plain = svc.submit(prompt="a red barn", steps=2, width=64, height=64, seed=3)
        asked = svc.submit(prompt="a red barn", steps=2, width=64, height=64, seed=3, precision="bf16")
        for job, want_params, want in ((plain, "fp32", "fp32"), (asked, "bf16", ran)):
            events = svc.stream(job["sse_url"]).read_all()
            expect(events[-1][0] == "complete" and events[-1][1]["precision"] == want,
                   "complete event %r" % ({k: v for k, v in events[-1][1].items() if k != "image"},), svc)
            doc = svc.wait_status(job["job_id"], ("complete",))
            expect(doc["precision"] == want and doc["params"]["precision"] == want_params,
                   "document precision %r params %r (want %s)" % (doc["precision"], doc["params"], want), svc)
            _, _, png = svc.request("GET", doc["image_url"])
            if not sdw.FAKE:
                sdw.check_png(png, 64, 64)
                text = png_parameters(png) or ""
                expect(("Precision: bf16" in text) == (want == "bf16") and "Version: sd-worker" in text,
                       "parameters %r" % text, svc)
        for value, code in (("fp16", "invalid_value"), ("BF16", "invalid_value"), (16, "invalid_type"),
                            (True, "invalid_type")):
            st, _, doc = svc.json("POST", "/v1/jobs", {"prompt": "x", "precision": value})
            expect(st == 400 and doc["error"]["field"] == "precision" and doc["error"]["code"] == code,
                   "precision %r -> %s %r" % (value, st, doc), svc)
    # the server's default from model.precision; a job's own value still wins
    with Service("precision-cfg", extra={"model": {"path": sdw.tiny_model(), "precision": "bf16"}}) as svc:
        svc.wait_ready()
        dflt = svc.submit(prompt="a red barn", steps=1, width=64, height=64, seed=3)
        own = svc.submit(prompt="a red barn", steps=1, width=64, height=64, seed=3, precision="fp32")
        d1 = svc.wait_status(dflt["job_id"], ("complete",))
        d2 = svc.wait_status(own["job_id"], ("complete",))
        expect(d1["params"]["precision"] == "bf16" and d1["precision"] == ran, "config default %r" % d1, svc)
        expect(d2["params"]["precision"] == "fp32" and d2["precision"] == "fp32", "job's own fp32 %r" % d2, svc)


if __name__ == "__main__":
    sdw.main([test_job_end_to_end, test_post_with_event_stream, test_readers_and_conflicts,
              test_turbo_recipe_and_sdxl_fields, test_precision])
