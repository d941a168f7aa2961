"""test_http_api.py: the service's HTTP surface without running jobs to the end: /health and /ready
transitions (503 while loading), routing errors (404, 405 with Allow), CORS, /metrics, and every
request validation error over HTTP (400 codes and fields, 413, 415)."""
import json
import os
import shutil
import signal
import socket
import stat
import struct
import tempfile
import time

import sdw
from sdw import Service, expect


def slow_engine(svc_dir, seconds):
    """An engine executable that waits before exec'ing the real one, so workers stay 'loading' a while."""
    real = os.environ.get("SDW_ENGINE") or os.path.join(sdw.BUILD, "sdw-fake-worker" if sdw.FAKE else "sd-worker-engine")
    path = os.path.join(svc_dir, "slow-engine.sh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nsleep %s\nexec "%s" "$@"\n' % (seconds, real))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_health_and_ready():
    svc = Service("ready", devices=2)
    svc.engine_wrapper = slow_engine(svc.dir, 2)
    with svc.start():
        st, h, doc = svc.json("GET", "/health")
        expect(st == 200 and doc["status"] == "ok" and doc["uptime_s"] >= 0, "health: %s %r" % (st, doc), svc)
        expect(h["content-type"].startswith("application/json"), "health content-type %r" % h)
        st, _, doc = svc.json("GET", "/ready")
        expect(st == 503, "ready while loading: %s %r" % (st, doc), svc)
        expect(doc["ready"] is False and "reason" in doc and "loading" in doc["reason"], "ready body %r" % doc, svc)
        expect(len(doc["workers"]) == 2 and all(w["state"] == "loading" for w in doc["workers"]),
               "workers while loading %r" % doc["workers"], svc)
        # a job submitted while loading waits in the queue, it is not refused
        job = svc.submit(prompt="early bird", steps=2, width=64, height=64)
        expect(job["queue_position"] == 1, "queued while loading: %r" % job, svc)
        # without a size and no model known yet, the size waits for the worker that takes the job
        sizeless = svc.submit(prompt="native size", steps=1, height=64)
        st, _, doc = svc.json("GET", "/v1/jobs/" + sizeless["job_id"])
        expect(doc["params"]["width"] is None and doc["params"]["height"] == 64, "size while loading %r" % doc, svc)
        expect(doc.get("native_size", None) is None, "no native size while loading %r" % doc, svc)
        doc = svc.wait_ready(60)
        expect(doc["ready"] is True and "reason" not in doc, "ready body %r" % doc, svc)
        native = doc["native_size"]
        expect(isinstance(native, int) and native >= 64 and
               all(w["native_size"] == native for w in doc["workers"] if w["state"] in ("ready", "busy")),
               "native sizes %r" % doc, svc)
        expect(all(w["arch"] == w["model"] for w in doc["workers"]), "arch %r" % doc, svc)
        expect(any(w["state"] in ("ready", "busy") for w in doc["workers"]), "ready without a worker %r" % doc, svc)
        ws = svc.wait_workers(lambda ws: all(w["state"] in ("ready", "busy") for w in ws), 60)
        for w in ws:
            expect(set(w) >= {"device", "state", "restarts"} and w["restarts"] == 0, "worker %r" % w, svc)
        expect(sorted(w["device"] for w in ws) == ["cpu:0", "cpu:1"] or os.cpu_count() == 1, "devices %r" % ws, svc)
        done = svc.wait_status(job["job_id"], ("complete",), 120)
        expect(done["step"] == 2, "early job %r" % done, svc)
        done = svc.wait_status(sizeless["job_id"], ("complete",), 120)
        expect(done["params"]["width"] == native and done["params"]["height"] == 64, "size from the worker %r" % done,
               svc)
        if not sdw.FAKE:
            st, _, png = svc.request("GET", "/v1/jobs/%s/image" % sizeless["job_id"])
            expect(st == 200 and struct.unpack(">II", png[16:24]) == (native, 64), "image size %r" % png[:24], svc)
        # once a worker is ready the size is known when the job is submitted
        later = svc.submit(prompt="native size now", steps=1)
        st, _, doc = svc.json("GET", "/v1/jobs/" + later["job_id"])
        expect(doc["params"]["width"] == native and doc["params"]["height"] == native, "size %r" % doc, svc)
        svc.wait_status(later["job_id"], ("complete",), 120)
        st, _, _ = svc.request("HEAD", "/health")
        expect(st == 200, "HEAD /health %s" % st, svc)


def test_routes_and_cors():
    svc = Service("routes", extra={"cors": {"allow_origins": ["http://ok.example", "https://app.example"]}})
    with svc.start():
        svc.wait_ready()
        st, h, doc = svc.json("GET", "/nope")
        expect(st == 404 and doc["error"]["code"] == "not_found" and doc["error"]["field"] is None,
               "404 %s %r" % (st, doc), svc)
        st, h, doc = svc.json("GET", "/v1/jobs")
        expect(st == 405 and doc["error"]["code"] == "method_not_allowed", "405 %s %r" % (st, doc), svc)
        expect("POST" in h.get("allow", ""), "Allow header %r" % h, svc)
        st, h, _ = svc.json("PUT", "/health")
        expect(st == 405 and "GET" in h.get("allow", ""), "405 on /health %s %r" % (st, h), svc)
        st, h, _ = svc.json("POST", "/v1/jobs/x-0000000000000000/stream")
        expect(st == 405, "POST stream %s" % st, svc)

        # preflight from an allowed origin
        st, h, body = svc.request("OPTIONS", "/v1/jobs", headers={
            "Origin": "http://ok.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        expect(st == 204 and h.get("access-control-allow-origin") == "http://ok.example", "preflight %s %r" % (st, h), svc)
        expect("POST" in h.get("access-control-allow-methods", ""), "allow-methods %r" % h, svc)
        expect(h.get("access-control-allow-headers", "").lower() == "content-type", "allow-headers %r" % h, svc)
        expect(int(h.get("access-control-max-age", "0")) > 0, "max-age %r" % h, svc)
        # a simple request from an allowed and from a foreign origin
        st, h, _ = svc.request("GET", "/health", headers={"Origin": "https://app.example"})
        expect(h.get("access-control-allow-origin") == "https://app.example" and "origin" in h.get("vary", "").lower(),
               "CORS on GET %r" % h, svc)
        st, h, _ = svc.request("GET", "/health", headers={"Origin": "http://evil.example"})
        expect(st == 200 and "access-control-allow-origin" not in h, "foreign origin got CORS %r" % h, svc)
        st, h, _ = svc.request("OPTIONS", "/v1/jobs", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        expect(st == 204 and "access-control-allow-origin" not in h, "foreign preflight %s %r" % (st, h), svc)
        # errors carry CORS headers too, so browsers can read them
        st, h, _ = svc.request("POST", "/v1/jobs", body="{}", headers={"Origin": "http://ok.example",
                                                                       "Content-Type": "application/json"})
        expect(st == 400 and h.get("access-control-allow-origin") == "http://ok.example", "CORS on 400 %r" % h, svc)

        # /metrics counts requests by route pattern
        st, h, body = svc.request("GET", "/metrics")
        text = body.decode()
        expect(st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), "metrics %s %r" % (st, h), svc)
        expect("sdw_http_requests_total" in text and 'route="/v1/jobs/{id}/stream"' in text,
               "metrics text lacks request counts:\n" + text[:2000], svc)
        # one access log line per request
        expect(svc.log_has("event=http method=OPTIONS path=/v1/jobs status=204"), "access log line", svc)


VALIDATION = [
    # (body, content type, status, code, field)
    ("{\"prompt\":\"a\",", "application/json", 400, "invalid_json", None),
    ("[]", "application/json", 400, "invalid_json", None),
    ("{\"prompt\":\"a\",\"prompt\":\"b\"}", "application/json", 400, "invalid_json", None),
    ("{\"prompt\":\"a\",\"cfg\":1}", "application/json", 400, "unknown_field", None),
    ("{}", "application/json", 400, "missing_field", "prompt"),
    ("{\"prompt\":7}", "application/json", 400, "invalid_type", "prompt"),
    ("{\"prompt\":\"\"}", "application/json", 400, "out_of_range", "prompt"),
    ("{\"prompt\":\"" + "x" * 4097 + "\"}", "application/json", 400, "out_of_range", "prompt"),
    ("{\"prompt\":\"a\",\"negative_prompt\":1}", "application/json", 400, "invalid_type", "negative_prompt"),
    ("{\"prompt\":\"a\",\"steps\":\"5\"}", "application/json", 400, "invalid_type", "steps"),
    ("{\"prompt\":\"a\",\"steps\":2.5}", "application/json", 400, "invalid_type", "steps"),
    ("{\"prompt\":\"a\",\"steps\":0}", "application/json", 400, "out_of_range", "steps"),
    ("{\"prompt\":\"a\",\"steps\":151}", "application/json", 400, "out_of_range", "steps"),
    ("{\"prompt\":\"a\",\"guidance_scale\":\"x\"}", "application/json", 400, "invalid_type", "guidance_scale"),
    ("{\"prompt\":\"a\",\"guidance_scale\":31}", "application/json", 400, "out_of_range", "guidance_scale"),
    ("{\"prompt\":\"a\",\"guidance_scale\":-1}", "application/json", 400, "out_of_range", "guidance_scale"),
    ("{\"prompt\":\"a\",\"seed\":-1}", "application/json", 400, "out_of_range", "seed"),
    ("{\"prompt\":\"a\",\"seed\":9223372036854775808}", "application/json", 400, "invalid_json", None),
    ("{\"prompt\":\"a\",\"seed\":1.5}", "application/json", 400, "invalid_type", "seed"),
    ("{\"prompt\":\"a\",\"width\":60}", "application/json", 400, "out_of_range", "width"),
    ("{\"prompt\":\"a\",\"width\":520}", "application/json", 400, "out_of_range", "width"),
    ("{\"prompt\":\"a\",\"height\":100}", "application/json", 400, "out_of_range", "height"),
    ("{\"prompt\":\"a\",\"height\":\"64\"}", "application/json", 400, "invalid_type", "height"),
    ("{\"prompt\":\"a\",\"sampler\":\"unipc\"}", "application/json", 400, "invalid_value", "sampler"),
    ("{\"prompt\":\"a\",\"schedule\":\"cosine\"}", "application/json", 400, "invalid_value", "schedule"),
    ("{\"prompt\":\"a\"}", "text/plain", 415, "unsupported_media_type", None),
    ("{\"prompt\":\"a\"}", "application/json; charset=iso-8859-1", 415, "unsupported_media_type", None),
    ("{\"prompt\":\"a\"}", None, 415, "unsupported_media_type", None),
    ("{\"prompt\":\"" + "x" * 70000 + "\"}", "application/json", 413, "body_too_large", None),
]


def test_validation_errors():
    with Service("validate", queue={"capacity": 4}) as svc:
        svc.wait_ready()
        for body, ct, status, code, field in VALIDATION:
            headers = {"Content-Type": ct} if ct else {}
            st, h, data = svc.request("POST", "/v1/jobs", body=body, headers=headers)
            doc = json.loads(data)
            err = doc.get("error", {})
            expect(st == status and err.get("code") == code and err.get("field") == field and err.get("message"),
                   "%r (%s): got %s %r, want %s %s %s" % (body[:80], ct, st, doc, status, code, field), svc)
            expect(h["content-type"].startswith("application/json"), "error content type %r" % h, svc)
        # a body far over the limit is refused by h2o from its Content-Length alone: still a 413
        with socket.create_connection(("127.0.0.1", svc.port), timeout=30) as s:
            s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 400000\r\n\r\n")
            head = s.recv(4096).decode("latin-1")
        expect(head.startswith("HTTP/1.1 413"), "huge body: %r" % head[:200], svc)
        # nothing was queued by any of it, and the service still serves
        st, _, doc = svc.json("GET", "/ready")
        expect(st == 200 and doc["queue"]["queued"] == 0 and doc["queue"]["running"] == 0, "after errors %r" % doc, svc)
        ok = svc.submit(prompt="still fine", steps=1, width=64, height=64, seed=9223372036854775807)
        expect(ok["seed"] == 9223372036854775807, "max seed (2^63-1) echoed %r" % ok, svc)
        # unknown and foreign ids
        for path in ("/v1/jobs/nope", "/v1/jobs/other-0123456789abcdef", "/v1/jobs/other-0123456789abcdef/stream",
                     "/v1/jobs/%s/image" % ok["job_id"][:-1]):
            st, _, doc = svc.json("GET", path)
            expect(st == 404 and doc["error"]["code"] == "not_found", "%s -> %s %r" % (path, st, doc), svc)
        st, _, doc = svc.json("DELETE", "/v1/jobs/nope")
        expect(st == 404, "DELETE unknown %s" % st, svc)
        svc.wait_status(ok["job_id"], ("complete",))


def test_no_worker_can_serve():
    """A model no worker can load: workers fail for good, queued jobs end, /ready and POST answer 503."""
    svc = Service("failed", fake_model="load_fail")
    bad = os.path.join(svc.dir, "not-a-model.safetensors")
    with open(bad, "wb") as f:
        f.write(b"this is not a safetensors file")
    if not sdw.FAKE:
        svc.model_override = bad
    svc.engine_wrapper = slow_engine(svc.dir, 1)
    with svc.start():
        job = svc.submit(prompt="waits for a worker that never comes", steps=2, width=64, height=64)
        s = svc.stream(job["sse_url"])
        evs = s.read_all()
        expect(evs[-1][0] == "error" and evs[-1][1]["code"] == "unavailable", "queued job: %r" % evs, svc)
        st, _, doc = svc.json("GET", "/ready")
        expect(st == 503 and doc["workers"][0]["state"] == "failed" and "failed" in doc["reason"], "ready %r" % doc, svc)
        st, _, doc = svc.json("POST", "/v1/jobs", {"prompt": "x"})
        expect(st == 503 and doc["error"]["code"] == "unavailable", "POST: %s %r" % (st, doc), svc)
        st, _, doc = svc.json("GET", "/health")
        expect(st == 200, "health %s" % st, svc)


def test_timeouts_and_keepalive():
    """An idle connection is closed after idle_timeout_s; a silent stream gets a keepalive comment every 15 s."""
    svc = Service("keepalive", limits={"idle_timeout_s": 2})
    svc.engine_wrapper = slow_engine(svc.dir, 25)
    with svc.start():
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
            data = s.recv(100)
        expect(data == b"" and 1.5 < time.time() - t0 < 6, "idle connection: %r after %.1f s" % (data, time.time() - t0),
               svc)
        # the worker is still "loading" (the wrapper sleeps): the job waits, its stream is silent
        job = svc.submit(prompt="waiting", steps=1, width=64, height=64)
        c = svc.conn(40)
        c.request("GET", job["sse_url"])
        r = c.getresponse()
        lines, t0 = [], time.time()
        while time.time() - t0 < 20:
            line = r.readline().decode().rstrip("\r\n")
            lines.append(line)
            if line.startswith(":"):
                break
        c.close()
        expect(lines[0] == "event: queued" and lines[-1] == ": keepalive" and 13 < time.time() - t0 < 18,
               "stream lines %r after %.1f s" % (lines, time.time() - t0), svc)


def test_sd_notify():
    """READY=1 once a worker is ready, STATUS= on changes, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    sock_path = os.path.join(tempfile.mkdtemp(prefix="sdw-notify-"), "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(sock_path)
    ns.settimeout(0.2)
    msgs = []

    def drain(until=None, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                msgs.append(ns.recv(4096).decode())
            except socket.timeout:
                pass
            if until and any(until in m for m in msgs):
                return True
        return False

    svc = Service("notify", env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    svc.engine_wrapper = slow_engine(svc.dir, 1)
    try:
        with svc.start():
            drain(timeout=0.5)
            expect(not any("READY=1" in m for m in msgs), "READY=1 before a worker was ready: %r" % msgs, svc)
            expect(drain("READY=1", 30), "no READY=1: %r" % msgs, svc)
            ready = [m for m in msgs if "READY=1" in m][0]
            expect("STATUS=1 ready" in ready, "READY message %r" % ready, svc)
            st, _, _ = svc.request("GET", "/ready")
            expect(st == 200, "READY=1 sent but /ready says %s" % st, svc)
            job = svc.submit(prompt="status", steps=2, width=64, height=64)
            svc.wait_status(job["job_id"], ("complete",))
            drain(timeout=1)
            expect(sum("WATCHDOG=1" in m for m in msgs) >= 3, "watchdog pings %r" % msgs, svc)
            expect(any(m.startswith("STATUS=0 ready, 1 busy") for m in msgs), "no busy status in %r" % msgs, svc)
            svc.signal(signal.SIGTERM)
            expect(drain("STOPPING=1", 10), "no STOPPING=1: %r" % msgs, svc)
            expect(svc.wait_exit(30) == 0, "exit code", svc)
    finally:
        ns.close()
        os.unlink(sock_path)
        os.rmdir(os.path.dirname(sock_path))


def test_hostile_clients():
    """Garbage, truncated and abandoned requests leave the service serving."""
    import random
    rnd = random.Random(7)
    with Service("hostile") as svc:
        svc.wait_ready()
        junk = [
            b"\x00\x01\x02garbage\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"GET " + b"/a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"y" * 70000 + b"\r\n\r\n",
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro",
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"BREW /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/jobs/%00%ff/../../health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(rnd.randrange(256) for _ in range(200)),
        ] + [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(40)]
        for data in junk:
            try:
                with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as s:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(3)
                    while s.recv(65536):
                        pass
            except OSError:
                pass  # reset or timeout: the server may close as it likes
            expect(svc.proc.poll() is None, "server died on %r" % data[:80], svc)
        # stream readers that vanish mid-stream, and a client that closes while its POST stream starts
        job = svc.submit(**sdw.slow_job(1.5, prompt="abandoned readers"))
        for _ in range(5):
            s = svc.stream(job["sse_url"])
            next(s)
            s.close()
        with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as s:
            body = b'{"prompt":"hit and run","steps":2,"width":64,"height":64}'
            s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        done = svc.wait_status(job["job_id"], ("complete",), 60)
        expect(done["status"] == "complete", "job %r" % done, svc)
        st, _, _ = svc.request("GET", "/health")
        expect(st == 200 and svc.proc.poll() is None, "health after abuse: %s" % st, svc)
        ok = svc.submit(prompt="still serving", steps=1, width=64, height=64)
        svc.wait_status(ok["job_id"], ("complete",), 60)


def test_lora_list():
    """GET /v1/loras and /sdapi/v1/loras list model.lora_dir's NAME.safetensors plain files, sorted; a folder
    that does not exist is an empty list."""
    d = tempfile.mkdtemp(prefix="loras-", dir=sdw.TMP if os.path.isdir(sdw.TMP) else None)
    for name, size in (("zeta.safetensors", 3), ("alpha.safetensors", 10), (".hidden.safetensors", 1),
                       ("readme.txt", 1)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"x" * size)
    os.mkdir(os.path.join(d, "dir.safetensors"))
    os.symlink("/etc/hostname", os.path.join(d, "escape.safetensors"))
    model = "step_ms=30" if sdw.FAKE else sdw.tiny_model()
    with Service("loras", extra={"model": {"path": model, "lora_dir": d}}).start() as svc:
        svc.wait_ready()
        st, _, doc = svc.json("GET", "/v1/loras")
        expect(st == 200 and doc == {"data": [{"name": "alpha", "size_bytes": 10}, {"name": "zeta", "size_bytes": 3}]},
               "native list %s %r" % (st, doc), svc)
        st, _, doc = svc.json("GET", "/sdapi/v1/loras")
        expect(st == 200 and [(x["name"], x["alias"], x["metadata"]) for x in doc] == [("alpha", "alpha", {}), ("zeta", "zeta", {})]
               and doc[0]["path"] == os.path.join(d, "alpha.safetensors"), "a1111 list %s %r" % (st, doc), svc)
        st, h, doc = svc.json("POST", "/v1/loras", {})
        expect(st == 405 and "GET" in h.get("allow", ""), "POST /v1/loras %s %r" % (st, h), svc)
        os.remove(os.path.join(d, "zeta.safetensors"))
        st, _, doc = svc.json("GET", "/v1/loras")
        expect(st == 200 and [x["name"] for x in doc["data"]] == ["alpha"], "read each time %r" % doc, svc)
    with Service("lorasnone", extra={"model": {"path": model, "lora_dir": os.path.join(d, "absent")}}).start() as svc:
        svc.wait_ready()
        st, _, doc = svc.json("GET", "/v1/loras")
        expect(st == 200 and doc == {"data": []}, "missing folder %s %r" % (st, doc), svc)
        st, _, doc = svc.json("GET", "/sdapi/v1/loras")
        expect(st == 200 and doc == [], "missing folder a1111 %s %r" % (st, doc), svc)
    shutil.rmtree(d)


if __name__ == "__main__":
    sdw.main([test_health_and_ready, test_routes_and_cors, test_validation_errors, test_no_worker_can_serve,
              test_timeouts_and_keepalive, test_sd_notify, test_hostile_clients, test_lora_list])
