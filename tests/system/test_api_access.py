"""test_api_access.py: API keys (401 with WWW-Authenticate on every route but the probes and the page,
Bearer checks, the per-key 429, SIGHUP reload, keys never logged, hash-key), the CORS default, the
check-config warning, and the DNS-rebinding Host check of a loopback listener."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import sdw
from sdw import Service, expect

EXE = os.path.join(sdw.BUILD, "sd-worker")
KEY_A = "key-a-0123456789abcdef0123"
KEY_B = "key-b-0123456789abcdef0123"
KEY_C = "key-c-0123456789abcdef0123"


def hash_line(name, key):
    r = subprocess.run([EXE, "hash-key", name], input=key + "\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def write_keys(path, pairs):
    with open(path + ".tmp", "w") as f:
        f.write("# name sha256\n\n" + "".join(hash_line(n, k) for n, k in pairs))
    os.replace(path + ".tmp", path)


def bearer(k):
    return {"Authorization": "Bearer " + k}


def test_hash_key():
    line = hash_line("alice", KEY_A)
    expect(line == "alice %s\n" % hashlib.sha256(KEY_A.encode()).hexdigest(), "line %r" % line)
    for name, key in (("bad name", KEY_A), ("ok", "short"), ("ok", "has space 0123456789")):
        r = subprocess.run([EXE, "hash-key", name], input=key, capture_output=True, text=True)
        expect(r.returncode == 1 and r.stderr and key not in r.stderr, "%r %r -> %d %r" % (name, key, r.returncode, r.stderr))


def test_keys():
    svc = Service("keys")
    keys = os.path.join(svc.dir, "keys")
    write_keys(keys, [("alice", KEY_A), ("bob", KEY_B)])
    svc.extra = {"auth": {"api_keys_file": keys, "max_queued_per_key": 2}}
    with svc.start():
        svc.wait_ready()
        for path in ("/health", "/ready", "/"):
            st, _, _ = svc.request("GET", path)
            expect(st == 200, "%s without a key -> %s" % (path, st), svc)
        for method, path, shape in (("GET", "/metrics", "native"), ("POST", "/v1/jobs", "native"),
                                    ("GET", "/v1/jobs/x-1", "native"), ("GET", "/v1/loras", "native"),
                                    ("GET", "/v1/models", "openai"),
                                    ("POST", "/v1/images/generations", "openai"), ("GET", "/sdapi/v1/samplers", "a1111"),
                                    ("GET", "/sdapi/v1/loras", "a1111"),
                                    ("POST", "/sdapi/v1/txt2img", "a1111"), ("GET", "/nothing", "native")):
            st, h, body = svc.request(method, path, body="{}" if method == "POST" else None)
            expect(st == 401 and h.get("www-authenticate") == "Bearer", "%s %s -> %s %r" % (method, path, st, h), svc)
            d = json.loads(body)
            if shape == "openai":
                expect(d["error"]["type"] == "authentication_error" and "param" in d["error"], "openai shape %r" % d)
            elif shape == "a1111":
                expect("detail" in d, "a1111 shape %r" % d)
            else:
                expect(d["error"]["code"] == "missing_api_key", "native shape %r" % d)
        st, h, _ = svc.request("GET", "/v1/models", headers=bearer("wrong-key-0123456789"))
        expect(st == 401 and "invalid_token" in h.get("www-authenticate", ""), "wrong key %s %r" % (st, h))
        st, h, _ = svc.request("GET", "/v1/models", headers={"Authorization": "Basic " + KEY_A})
        expect(st == 401, "other scheme %s" % st)
        st, _, _ = svc.request("GET", "/v1/models", headers={"Authorization": "bearer " + KEY_A})
        expect(st == 200, "lower-case scheme %s" % st)
        st, _, _ = svc.request("GET", "/metrics", headers=bearer(KEY_B))
        expect(st == 200, "metrics with a key %s" % st)

        # the per-key limit: alice may have 2 unfinished jobs, bob is not affected
        slow = sdw.slow_job(20)
        ids = []
        for _ in range(2):
            st, _, d = svc.json("POST", "/v1/jobs", slow, headers=bearer(KEY_A))
            expect(st == 202, "alice submit %s %r" % (st, d), svc)
            ids.append(d["job_id"])
        st, h, d = svc.json("POST", "/v1/jobs", slow, headers=bearer(KEY_A))
        expect(st == 429 and d["error"]["code"] == "key_limit" and "retry-after" in h, "third %s %r %r" % (st, h, d), svc)
        st, h, d = svc.json("POST", "/sdapi/v1/txt2img", dict(prompt="x", steps=2, width=64, height=64),
                            headers=bearer(KEY_A))
        expect(st == 429, "a1111 third %s %r" % (st, d))
        st, _, d = svc.json("POST", "/v1/jobs", dict(slow, steps=2), headers=bearer(KEY_B))
        expect(st == 202, "bob %s %r" % (st, d))
        for i in ids:
            svc.request("DELETE", "/v1/jobs/" + i, headers=bearer(KEY_A))
        for i in ids:
            deadline = time.time() + 60
            while time.time() < deadline and svc.json("GET", "/v1/jobs/" + i, headers=bearer(KEY_A))[2]["status"] not in ("cancelled", "complete"):
                time.sleep(0.05)
        st, _, d = svc.json("POST", "/v1/jobs", dict(slow, steps=2), headers=bearer(KEY_A))
        expect(st == 202, "alice after her jobs ended %s %r" % (st, d), svc)

        # reload on SIGHUP: carol added, bob removed; a broken file keeps the table
        write_keys(keys, [("alice", KEY_A), ("carol", KEY_C)])
        svc.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and not svc.log_has("keys_reloaded"):
            time.sleep(0.05)
        expect(svc.request("GET", "/v1/models", headers=bearer(KEY_C))[0] == 200, "carol after reload", svc)
        expect(svc.request("GET", "/v1/models", headers=bearer(KEY_B))[0] == 401, "bob after reload", svc)
        with open(keys, "a") as f:
            f.write("broken line\n")
        svc.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and not svc.log_has("keys_reload_failed"):
            time.sleep(0.05)
        expect(svc.log_has("keys_reload_failed"), "a broken file is reported", svc)
        expect(svc.request("GET", "/v1/models", headers=bearer(KEY_C))[0] == 200, "old table kept", svc)

        log = svc.log_text()
        for k in (KEY_A, KEY_B, KEY_C, "wrong-key-0123456789"):
            expect(k not in log, "a key was logged")
        expect("key=alice" in log and "key=bob" in log, "the access log names keys", svc)


def test_metrics_open_and_bad_keys_file():
    svc = Service("keysm")
    keys = os.path.join(svc.dir, "keys")
    write_keys(keys, [("alice", KEY_A)])
    svc.extra = {"auth": {"api_keys_file": keys, "protect_metrics": False}}
    with svc.start():
        svc.wait_ready()
        expect(svc.request("GET", "/metrics")[0] == 200, "protect_metrics: false opens /metrics")
    bad = Service("keysbad")
    with open(os.path.join(bad.dir, "keys"), "w") as f:
        f.write("alice nothex\n")
    bad.extra = {"auth": {"api_keys_file": os.path.join(bad.dir, "keys")}}
    cfg = os.path.join(bad.dir, "c.yaml")
    with open(cfg, "w") as f:
        f.write(bad.config_text())
    r = subprocess.run([EXE, "check-config", "--config", cfg], capture_output=True, text=True)
    shutil.rmtree(bad.dir, ignore_errors=True)  # never started: the harness does not know it
    expect(r.returncode == 1 and ":1: " in r.stderr, "check-config on a bad keys file %d %r" % (r.returncode, r.stderr))


def test_cors_default_and_warning():
    with Service("cors").start() as svc:
        svc.wait_ready()
        st, h, _ = svc.request("GET", "/health", headers={"Origin": "http://evil.example"})
        expect(st == 200 and "access-control-allow-origin" not in h, "default CORS %r" % h)
        st, h, _ = svc.request("OPTIONS", "/v1/images/generations", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        expect(st == 204 and "access-control-allow-origin" not in h, "default preflight %s %r" % (st, h))
    svc = Service("corsw", extra={"cors": {"allow_origins": ["*"]}})
    cfg = os.path.join(svc.dir, "c.yaml")
    with open(cfg, "w") as f:
        f.write(svc.config_text())
    r = subprocess.run([EXE, "check-config", "--config", cfg], capture_output=True, text=True)
    expect(r.returncode == 0 and "warning" in r.stderr and "api_keys_file" in r.stderr, "warning %r" % r.stderr)
    keys = os.path.join(svc.dir, "keys")
    write_keys(keys, [("alice", KEY_A)])
    svc.extra["auth"] = {"api_keys_file": keys}
    with open(cfg, "w") as f:
        f.write(svc.config_text())
    r = subprocess.run([EXE, "check-config", "--config", cfg], capture_output=True, text=True)
    shutil.rmtree(svc.dir, ignore_errors=True)  # never started: the harness does not know it
    expect(r.returncode == 0 and "warning" not in r.stderr, "no warning with keys %r" % r.stderr)


def test_host_check():
    with Service("host", extra={"server_names": ["sd.example"]}).start() as svc:
        svc.wait_ready()
        for host, want in (("evil.example", 421), ("evil.example:%d" % svc.port, 421), ("127.0.0.1.nip.io", 421),
                           ("localhost", 200), ("localhost:%d" % svc.port, 200), ("127.0.0.1:%d" % svc.port, 200),
                           ("127.5.5.5", 200), ("[::1]:%d" % svc.port, 200), ("app.localhost", 200),
                           ("sd.example", 200), ("SD.example:80", 200)):
            st, _, body = svc.request("GET", "/v1/models", headers={"Host": host})
            expect(st == want, "Host %s -> %s %r" % (host, st, body), svc)
            if want == 421:
                expect(json.loads(body)["error"]["message"], "421 body")
        # HTTP/1.0 without Host, as health checkers send it
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        expect(data.startswith(b"HTTP/1.1 200"), "no Host: %r" % data[:200])


if __name__ == "__main__":
    sdw.main([test_hash_key, test_keys, test_metrics_open_and_bad_keys_file, test_cors_default_and_warning,
              test_host_check])
