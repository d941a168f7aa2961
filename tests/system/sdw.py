"""sdw.py: helpers for the HTTP system tests (python3 stdlib only): a tiny model, a config with port 0,
a started `sd-worker serve` whose listening line is parsed, HTTP/SSE clients, and cleanup that always
kills what was started (try/finally in the tests, atexit here, and the whole process group)."""
import atexit
import base64
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("SDW_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
TMP = os.path.join(BUILD, "tmp")
SKIP = 77

# SDW_SYSTEST_FAKE=1 runs the tests against the protocol test double (tests/serving/fake_worker.c) instead
# of the real engine; only for developing the HTTP side while the engine is not built. The suite as
# registered in ctest always uses the real engine and the tiny model.
FAKE = os.environ.get("SDW_SYSTEST_FAKE") == "1"

_services = []


def log(*a):
    print(*a, flush=True)


class Skip(Exception):
    """Raised by a test that cannot run here (sdw.main reports it; all skipped -> exit 77)."""


def skip(why):
    raise Skip(why)


def tiny_model():
    """Path of the tiny random model, written once per build dir (atomically, tests may run in parallel)."""
    if FAKE:
        return "ok"
    os.makedirs(TMP, exist_ok=True)
    path = os.path.join(TMP, "systest-tiny.safetensors")
    if os.path.exists(path):
        return path
    part = "%s.%d.tmp" % (path, os.getpid())
    exe = os.path.join(BUILD, "sd-worker")
    r = subprocess.run([exe, "mkmodel", "--preset", "tiny", "--output", part], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("mkmodel failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr))
    os.replace(part, path)
    return path


# Seconds one sampling step takes on one worker thread, for the size slow_job() asks for (measured on the
# 2-vCPU development machine; jobs only need to be "long enough", nothing asserts on time).
FAKE_STEP_S = 0.03  # the fake's step_ms=30 default below
REAL_SIZE = 128
REAL_STEP_S = 0.05


def slow_job(seconds=3.0, **extra):
    """Parameters for a job that runs roughly `seconds` on one worker, in many steps, so that a cancel,
    a kill or a shutdown lands in the middle of it."""
    if FAKE:
        p = dict(steps=max(4, min(150, int(seconds / FAKE_STEP_S))), width=64, height=64)
    elif seconds / REAL_STEP_S <= 150:
        p = dict(steps=max(4, int(seconds / REAL_STEP_S)), width=REAL_SIZE, height=REAL_SIZE)
    else:
        # the step limit is 150, and 150 tiny steps at 128x128 took 0.9 s on a 2-vCPU CI machine (since
        # the AVX-512 float32 GEMM): longer jobs (a shutdown's grace running out) take 4x the pixels
        p = dict(steps=150, width=2 * REAL_SIZE, height=2 * REAL_SIZE)
    p.update(extra)
    p.setdefault("prompt", "a slow job")
    return p


def _yaml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s: %s" % (k, _yaml(x)) for k, x in v.items()) + " }"
    return json.dumps(str(v))


class Service:
    """One `sd-worker serve` with its own config; use as a context manager."""

    def __init__(self, name, devices=1, queue=None, limits=None, workers=None, extra=None, fake_model=None,
                 engine_wrapper=None, env=None, preexec_fn=None):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="systest-%s-" % name, dir=TMP if os.path.isdir(TMP) else None)
        self.devices = devices
        self.queue = queue or {}
        self.limits = limits or {}
        self.workers = workers or {}
        self.extra = extra or {}
        self.fake_model = fake_model
        self.engine_wrapper = engine_wrapper
        self.env = env or {}
        self.preexec_fn = preexec_fn  # run in the child before exec (e.g. lower RLIMIT_NOFILE)
        self.model_override = None
        self.proc = None
        self.port = None
        self.lines = []
        self._lock = threading.Lock()
        self._reader = None

    # -- lifecycle --

    def config_text(self):
        model = self.model_override or ((self.fake_model or "step_ms=30") if FAKE else tiny_model())
        cfg = {
            "listen": "127.0.0.1:0",
            "node_id": "st-" + self.name.replace("_", "-")[:20],
            "model": {"path": model},
            "queue": dict({"capacity": 8, "result_ttl_s": 60}, **self.queue),
            "limits": dict({"max_width": 512, "max_height": 512, "max_steps": 150, "max_body_bytes": 65536},
                           **self.limits),
            "workers": dict({"restart_backoff_ms": [100, 1000], "shutdown_grace_s": 20}, **self.workers),
            "log": {"level": "debug"},
            "metrics": {"enabled": True},
        }
        cfg.update(self.extra)
        ncpu = os.cpu_count() or 1
        devs = []
        for i in range(self.devices):
            devs.append({"kind": "cpu", "cpus": str(i % ncpu), "threads": 1})
        out = []
        for k, v in cfg.items():
            out.append("%s: %s" % (k, _yaml(v)))
        out.append("devices:")
        for d in devs:
            out.append("  - " + _yaml(d))
        return "\n".join(out) + "\n"

    def start(self):
        assert self.proc is None, "service %s started twice" % self.name
        path = os.path.join(self.dir, "sd-worker.yaml")
        with open(path, "w") as f:
            f.write(self.config_text())
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        if FAKE:
            env["SDW_ENGINE"] = os.path.join(BUILD, "sdw-fake-worker")
        if self.engine_wrapper:
            env["SDW_ENGINE"] = self.engine_wrapper
        env.update(self.env)
        exe = os.path.join(BUILD, "sd-worker")
        self.proc = subprocess.Popen([exe, "serve", "--config", path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True, preexec_fn=self.preexec_fn)
        _services.append(self)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.time() + 30
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError("sd-worker exited with %s before listening:\n%s" % (self.proc.returncode, self.log_text()))
            time.sleep(0.02)
        if self.port is None:
            raise RuntimeError("no listening line within 30 s:\n" + self.log_text())
        return self

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
            if self.port is None and "event=listening" in line:
                for tok in line.split():
                    if tok.startswith("addr="):
                        self.port = int(tok.rsplit(":", 1)[1])

    def log_text(self):
        with self._lock:
            return "\n".join(self.lines[-200:])

    def log_has(self, needle):
        with self._lock:
            return any(needle in l for l in self.lines)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                st, _, body = self.request("GET", "/ready")
                last = (st, body)
                if st == 200:
                    return json.loads(body)
            except OSError as e:
                last = e
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("not ready within %s s (last %r):\n%s" % (timeout, last, self.log_text()))

    def wait_workers(self, pred, timeout=60):
        """Polls /ready until pred(workers list) holds; returns the list."""
        deadline = time.time() + timeout
        ws = None
        while time.time() < deadline:
            st, _, body = self.request("GET", "/ready")
            ws = json.loads(body)["workers"]
            if pred(ws):
                return ws
            time.sleep(0.05)
        raise AssertionError("workers never reached the wanted state: %r\n%s" % (ws, self.log_text()))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=60):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("sd-worker did not exit within %s s:\n%s" % (timeout, self.log_text()))
        # its last lines may still be in the pipe: log_has() right after must see them
        if self._reader:
            self._reader.join(10)
        return rc

    def stop(self, timeout=30):
        """SIGTERM, wait; returns the exit code (SIGKILL and AssertionError if it hangs)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("sd-worker ignored SIGTERM for %s s:\n%s" % (timeout, self.log_text()))

    def kill(self):
        """Kills the supervisor and everything in its process group (its workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for pid in self.worker_pids_all():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def worker_pids_all(self):
        return [p for p, _ in _children(self.proc.pid)] if self.proc else []

    def worker_pids(self):
        """Live worker processes (children of the supervisor that are not zombies)."""
        return [p for p, st in _children(self.proc.pid) if st != "Z"]

    def __enter__(self):
        # `with Service(...) as svc` starts it here; `with svc.start():` has started it already
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                self.stop()
        finally:
            self.kill()
        return False

    # -- HTTP --

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60, conn=None):
        own = conn is None
        c = conn or self.conn(timeout)
        try:
            h = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if own:
                c.close()

    def json(self, method, path, body=None, headers=None):
        st, h, data = self.request(method, path, body, headers)
        return st, h, json.loads(data) if data else None

    def submit(self, **params):
        st, h, doc = self.json("POST", "/v1/jobs", params)
        assert st == 202, "submit %r -> %s %r" % (params, st, doc)
        return doc

    def stream(self, path, timeout=120, method="GET", body=None, headers=None):
        """Opens an SSE stream; returns an SSE reader (iterate for (event, data) pairs)."""
        return SSE(self, path, timeout, method, body, headers)

    def wait_status(self, job_id, statuses, timeout=120):
        deadline = time.time() + timeout
        doc = None
        while time.time() < deadline:
            st, _, doc = self.json("GET", "/v1/jobs/" + job_id)
            if st == 200 and doc["status"] in statuses:
                return doc
            time.sleep(0.05)
        raise AssertionError("job %s never reached %s: %r" % (job_id, statuses, doc))


class SSE:
    def __init__(self, svc, path, timeout, method, body, headers):
        self.c = svc.conn(timeout)
        h = {"Accept": "text/event-stream"}
        h.update(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        self.c.request(method, path, body=body, headers=h)
        self.r = self.c.getresponse()
        self.status = self.r.status
        self.headers = {k.lower(): v for k, v in self.r.getheaders()}
        self.comments = 0
        self.events = []

    def __iter__(self):
        return self

    def __next__(self):
        ev, data = None, []
        while True:
            line = self.r.readline()
            if not line:
                raise StopIteration
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if ev is None and not data:
                    continue
                item = (ev or "message", json.loads("\n".join(data)) if data else None)
                self.events.append(item)
                return item
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())

    def read_all(self):
        """Reads to the end of the stream; returns every event."""
        for _ in self:
            pass
        self.c.close()
        return self.events

    def until(self, name):
        """Reads events until one named name (returned); None if the stream ends first."""
        for ev, data in self:
            if ev == name:
                return data
        return None

    def close(self):
        self.c.close()


def _children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        rest = s.rsplit(")", 1)[1].split()
        if int(rest[1]) == ppid:
            out.append((int(d), rest[0]))
    return out


def png_size(data):
    """(width, height) from a PNG's IHDR; AssertionError if data is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG: %r" % data[:16]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is %r" % kind
    return struct.unpack(">II", data[16:24])


def check_png(data, width, height):
    """Asserts data is a PNG of width x height (the test double returns a marker instead of a PNG)."""
    if FAKE:
        assert data.startswith(b"FAKEPNG:"), "fake image %r" % data[:40]
        return
    got = png_size(data)
    assert got == (width, height), "PNG is %dx%d, asked for %dx%d" % (got + (width, height))


def check_b64png(s, width, height):
    check_png(base64.b64decode(s, validate=True), width, height)


def expect(cond, msg, svc=None):
    if not cond:
        raise AssertionError(msg + ("\n--- service log ---\n" + svc.log_text() if svc else ""))


def _cleanup():
    for s in _services:
        try:
            s.kill()
        except Exception:
            pass
        shutil.rmtree(s.dir, ignore_errors=True)


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda signo, frame: sys.exit(128 + signo))


def main(tests):
    """Runs each test function; prints a summary; exits 0 or 1."""
    failed = skipped = 0
    for t in tests:
        t0 = time.time()
        try:
            t()
            log("ok   %-40s %.1f s" % (t.__name__, time.time() - t0))
        except Skip as e:
            skipped += 1
            log("skip %-40s %s" % (t.__name__, e))
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            log("FAIL %-40s %.1f s\n%s: %s" % (t.__name__, time.time() - t0, type(e).__name__, e))
            if not isinstance(e, AssertionError):  # expect() already attached the log
                for svc in _services:
                    if svc.proc is not None and svc.proc.poll() is not None:
                        log("sd-worker %s exited with %s" % (svc.name, svc.proc.returncode))
                    log("--- log of %s ---\n%s" % (svc.name, svc.log_text()))
        finally:
            _cleanup()
            _services.clear()
    log("%d passed, %d failed, %d skipped" % (len(tests) - failed - skipped, failed, skipped))
    sys.exit(1 if failed else SKIP if skipped == len(tests) else 0)
