#!/usr/bin/env python3
# test_fleet_nginx.py: nginx with deploy/nginx/sd-worker.conf in front of two sd-worker nodes on loopback:
# both job flows through the proxy, routing by job-id prefix, unbuffered SSE, failover when a node dies.
"""Skips (exit 77) when nginx is not installed. Everything runs as the calling user on 127.0.0.1, in a
temporary folder under $SDW_BUILD_DIR/tmp; every process started here is stopped, also on failure."""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("SDW_BUILD_DIR") or os.path.join(SRC, "build"))
sys.dont_write_bytecode = True  # the helper lives in the source tree
sys.path.insert(0, os.path.join(SRC, "tests", "packaging"))
import sdw_http as H  # noqa: E402

SMALL = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4, "seed": 11}
# Long enough to keep a worker busy while the streamed POST below waits in the queue; cancelled anyway.
LONG = {"prompt": "a busy worker", "width": 512, "height": 512, "steps": 150, "seed": 5}

procs = []  # (name, Popen) of everything started, stopped by stop_all()


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print("warning: %s (pid %d) did not exit" % (name, p.pid), file=sys.stderr)
    procs.clear()


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


class Node:
    """One `sd-worker serve` with its own config, node_id and port (port 0: the server picks, logs it)."""

    def __init__(self, tmp, node_id, model):
        self.node_id = node_id
        self.cfg = os.path.join(tmp, node_id + ".yaml")
        with open(self.cfg, "w") as f:
            f.write('listen: "127.0.0.1:0"\nnode_id: "%s"\nmodel:\n  path: "%s"\n'
                    'devices:\n  - { kind: cpu, threads: 1 }\nlog: { level: info }\n' % (node_id, model))
        self.log = open(os.path.join(tmp, node_id + ".log"), "w")
        self.addr = None
        self._seen = threading.Event()
        self.proc = subprocess.Popen([os.path.join(BUILD, "sd-worker"), "serve", "--config", self.cfg],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.PIPE,
                                     start_new_session=True)
        procs.append((node_id, self.proc))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.log.write(line)
            self.log.flush()
            m = re.search(r"event=\"?listening\"?.*\baddr=\"?([0-9.]+:[0-9]+)", line)
            if m and not self.addr:
                self.addr = m.group(1)
                self._seen.set()

    def base(self):
        return "http://" + self.addr

    def wait_listening(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not self._seen.wait(0.1):
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader thread copy the last lines into the log
                raise H.Fail("%s exited with %d before listening; its log:\n%s"
                             % (self.node_id, self.proc.returncode, open(self.log.name).read()[-1500:]))
            if time.monotonic() > deadline:
                raise H.Fail("%s did not log its listening address within %ds (see %s)" % (self.node_id, timeout, self.log.name))
        H.wait_ready(self.base(), timeout=120, alive=lambda: self.proc.poll() is None)

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)  # the supervisor and its workers, as a crash would
        self.proc.wait(timeout=10)


def render_nginx(tmp, a, b, port):
    """deploy/nginx/sd-worker.conf with the example's addresses and port replaced, in a minimal nginx.conf."""
    with open(os.path.join(SRC, "deploy", "nginx", "sd-worker.conf")) as f:
        site = f.read()
    for old, new in (("10.0.0.11:8080", a.addr), ("10.0.0.12:8080", b.addr), ("listen 80;", "listen 127.0.0.1:%d;" % port)):
        if old not in site:
            raise H.Fail("deploy/nginx/sd-worker.conf no longer contains %r: update this test with it" % old)
        site = site.replace(old, new)
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    with open(os.path.join(d, "sd-worker.conf"), "w") as f:
        f.write(site)
    # As root nginx would switch its worker to 'nobody', who cannot write into this private folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(user + "worker_processes 1;\nerror_log %s/error.log info;\nevents { worker_connections 512; }\n"
                "http {\n  access_log %s/access.log;\n" % (d, d) +
                "".join("  %s_temp_path %s/%s_temp;\n" % (t, d, t) for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")) +
                "  include %s/sd-worker.conf;\n}\n" % d)
    return d


def start_nginx(nginx, d, port):
    p = subprocess.Popen([nginx, "-p", d, "-c", d + "/nginx.conf", "-e", d + "/error.log",
                          "-g", "daemon off; pid %s/nginx.pid;" % d],
                         stdin=subprocess.DEVNULL, start_new_session=True)
    procs.append(("nginx", p))
    base = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise H.Fail("nginx exited with %d; see %s/error.log:\n%s" % (p.returncode, d, open(d + "/error.log").read()[-2000:]))
        try:
            if H.request(base, "GET", "/health", timeout=2)[0] == 200:
                return base
        except OSError:
            pass
        time.sleep(0.1)
    raise H.Fail("nginx did not answer on %s" % base)


def check_png(png, params, what):
    if png is None:
        raise H.Fail("%s: job did not complete" % what)
    w, h = H.png_decode(png)
    if (w, h) != (params["width"], params["height"]):
        raise H.Fail("%s: PNG is %dx%d, asked for %dx%d" % (what, w, h, params["width"], params["height"]))


def node_of(job_id):
    for n in ("node-a", "node-b"):
        if re.fullmatch(n + r"-[0-9a-f]+", job_id):
            return n
    raise H.Fail("job id %r does not have the form <node_id>-<hex> of node-a or node-b" % job_id)


def wait_status(base, job_id, want, timeout=60):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        code, _, js = H.http_json(base, "GET", "/v1/jobs/" + job_id)
        st = js.get("status") if code == 200 and isinstance(js, dict) else (code, js)
        if st in want:
            return st
        time.sleep(0.05)
    raise H.Fail("job %s: status %r, waited for %r" % (job_id, st, want))


def main():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not nginx:
        print("SKIP: nginx is not installed (Debian: apt-get install nginx-light)")
        return 77
    exe = os.path.join(BUILD, "sd-worker")
    if not os.access(exe, os.X_OK):
        raise H.Fail("%s not built" % exe)
    os.makedirs(os.path.join(BUILD, "tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="fleet-nginx-", dir=os.path.join(BUILD, "tmp"))
    model = os.path.join(tmp, "tiny.safetensors")
    subprocess.run([exe, "mkmodel", "--preset", "tiny", "--output", model], check=True, stdout=subprocess.DEVNULL)

    a, b = Node(tmp, "node-a", model), Node(tmp, "node-b", model)
    a.wait_listening()
    b.wait_listening()
    port = H.free_port()
    base = start_nginx(nginx, render_nginx(tmp, a, b, port), port)
    print("nodes %s (node-a), %s (node-b); nginx on %s" % (a.addr, b.addr, base))

    st, _, js = H.http_json(base, "GET", "/ready")
    if st != 200:
        raise H.Fail("GET /ready through nginx: %d %r" % (st, js))
    print("ok: /ready through nginx is 200")

    # 1. POST, then GET the stream: the stream request must reach the node that holds the job.
    served = {}
    for i in range(6):
        p = dict(SMALL, seed=100 + i)
        job_id, events, png = H.run_job(base, p)
        check_png(png, p, "POST+GET job %s" % job_id)
        served.setdefault(node_of(job_id), []).append(job_id)
    if set(served) != {"node-a", "node-b"}:
        raise H.Fail("new jobs did not spread over both nodes: %r" % served)
    for n, ids in served.items():
        for job_id in ids:
            for _ in range(3):  # misrouted, a node answers 404 for a job it does not hold
                code, _, js = H.http_json(base, "GET", "/v1/jobs/" + job_id)
                if code != 200 or js.get("status") != "complete":
                    raise H.Fail("GET /v1/jobs/%s through nginx: %d %r" % (job_id, code, js))
            code, hd, img = H.request(base, "GET", "/v1/jobs/%s/image" % job_id)
            if code != 200 or not hd.get("content-type", "").startswith("image/png"):
                raise H.Fail("GET /v1/jobs/%s/image through nginx: %d %s" % (job_id, code, hd.get("content-type")))
            H.png_decode(img)
    print("ok: POST then GET stream, status and image routed by job id: %s"
          % ", ".join("%s %d jobs" % (n, len(v)) for n, v in sorted(served.items())))

    # 2. POST with Accept: text/event-stream through nginx.
    for i in range(2):
        p = dict(SMALL, seed=200 + i)
        job_id, events, png = H.run_job(base, p, stream_in_post=True)
        check_png(png, p, "streamed POST job %s" % job_id)
        node_of(job_id)
    print("ok: POST with Accept: text/event-stream completes through nginx")

    # 3. Events are not buffered by the proxy: with both workers busy, a streamed POST's first event
    # ('queued') must reach the client while the job is still waiting.
    blockers = [(n, H.submit(n.base(), LONG)["job_id"]) for n in (a, b)]
    for n, job_id in blockers:
        wait_status(n.base(), job_id, ("running",))
    c, r = H.open_stream(base, "POST", "/v1/jobs", dict(SMALL, seed=300), timeout=30)
    first = []
    try:
        got = threading.Event()

        def on_event(name, data):
            if not first:
                first.append((name, data))
                got.set()
        reader = threading.Thread(target=lambda: H.sse_events(r, on_event), daemon=True)
        reader.start()
        if not got.wait(20):
            raise H.Fail("no event within 20 s of a streamed POST through nginx: the proxy buffers the stream")
        name, data = first[0]
        if name != "queued" or "job_id" not in data:
            raise H.Fail("first streamed event: %r" % (first[0],))
        job_id = data["job_id"]
        status = wait_status(base, job_id, ("queued", "running", "complete", "error", "cancelled"))
        if status != "queued":
            raise H.Fail("the 'queued' event arrived only when the job was already %s (buffered?)" % status)
        H.request(base, "DELETE", "/v1/jobs/" + job_id)
        reader.join(30)
    finally:
        c.close()
    for n, job_id in blockers:
        H.request(base, "DELETE", "/v1/jobs/" + job_id)  # through nginx: routed by prefix as well
    for n, job_id in blockers:
        wait_status(n.base(), job_id, ("cancelled", "complete"), timeout=120)
    print("ok: the first event of a streamed POST arrives while the job is queued (proxy_buffering off)")

    # 4. A node dies: new jobs still complete through the other; its old jobs answer 502, not 404.
    a.kill()
    for i in range(4):
        p = dict(SMALL, seed=400 + i)
        job_id, events, png = H.run_job(base, p, stream_in_post=bool(i % 2))
        check_png(png, p, "job %s after node-a died" % job_id)
        if node_of(job_id) != "node-b":
            raise H.Fail("job %s after node-a died" % job_id)
    old = served["node-a"][0]
    code, _, _ = H.request(base, "GET", "/v1/jobs/" + old)
    if code != 502:
        raise H.Fail("GET of a job on the dead node: %d, expected 502 from nginx" % code)
    st, _, js = H.http_json(base, "GET", "/ready")
    if st != 200:
        raise H.Fail("GET /ready through nginx with one node down: %d %r" % (st, js))
    print("ok: node-a killed: 4 new jobs completed on node-b, /ready 200, node-a's jobs 502")
    stop_all()
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    except (H.Fail, OSError, subprocess.CalledProcessError, ValueError, KeyError) as e:
        print("FAIL: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        stop_all()
    sys.exit(rc)
