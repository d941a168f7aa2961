#!/usr/bin/env python3
# sdw_fleet.py: the pieces the fleet tests share: sd-worker nodes on loopback (config, start, listening
# address, kill), a proxy in front of them, stopping every process a test started, and the checks.
"""Used by tests/system/test_fleet_nginx.py and test_fleet_haproxy.py; python3 stdlib only."""
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

import sdw_http as H

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("SDW_BUILD_DIR") or os.path.join(SRC, "build"))

SMALL = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4, "seed": 11}
# Long enough to keep a worker busy while another request waits in the queue; cancelled anyway.
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


def start(name, argv, **kw):
    """Starts a helper process (nginx, haproxy) in its own session, stopped by stop_all()."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    procs.append((name, p))
    return p


def find_program(name):
    """The path of program name on PATH or in /usr/sbin (not on a plain user's PATH), or None."""
    sbin = os.path.join("/usr/sbin", name)
    return shutil.which(name) or (sbin if os.access(sbin, os.X_OK) else None)


def render_example(rel, replacements):
    """The text of deploy/<rel> with each (old, new) of replacements applied. An old text missing from the
    example fails the test, so a changed example is not silently tested with stale addresses."""
    with open(os.path.join(SRC, "deploy", rel)) as f:
        text = f.read()
    for old, new in replacements:
        if old not in text:
            raise H.Fail("deploy/%s no longer contains %r: update this test with it" % (rel, old))
        text = text.replace(old, new)
    return text


def wait_proxy(name, p, base, path, timeout, interval, log_hint):
    """Polls GET path through the proxy process p (called name) at base every interval seconds until it
    answers 200; returns base. Fails after timeout seconds, or when p exits (adding log_hint())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise H.Fail("%s exited with %d; %s" % (name, p.returncode, log_hint()))
        try:
            if H.request(base, "GET", path, timeout=2)[0] == 200:
                return base
        except OSError:
            pass
        time.sleep(interval)
    raise H.Fail("%s did not answer %s on %s" % (name, path, base))


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


def start_nodes(prefix):
    """A temporary folder under $SDW_BUILD_DIR/tmp, a tiny model in it, and two ready nodes node-a and
    node-b serving it. Returns (folder, node_a, node_b)."""
    exe = os.path.join(BUILD, "sd-worker")
    if not os.access(exe, os.X_OK):
        raise H.Fail("%s not built" % exe)
    os.makedirs(os.path.join(BUILD, "tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=os.path.join(BUILD, "tmp"))
    model = os.path.join(tmp, "tiny.safetensors")
    subprocess.run([exe, "mkmodel", "--preset", "tiny", "--output", model], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = Node(tmp, "node-a", model), Node(tmp, "node-b", model)
    a.wait_listening()
    b.wait_listening()
    return tmp, a, b


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


def fleet_checks(base, a, b, dead_status):
    """The checks both proxy tests make, through the proxy at base in front of nodes a (node-a) and b
    (node-b): readiness, both job flows, routing by job id, unbuffered events, failover when a dies.
    dead_status: what the proxy answers for a job on a dead node (nginx 502, HAProxy 503)."""
    st, _, js = H.http_json(base, "GET", "/ready")
    if st != 200:
        raise H.Fail("GET /ready through the proxy: %d %r" % (st, js))
    print("ok: /ready through the proxy is 200")

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
                    raise H.Fail("GET /v1/jobs/%s through the proxy: %d %r" % (job_id, code, js))
            code, hd, img = H.request(base, "GET", "/v1/jobs/%s/image" % job_id)
            if code != 200 or not hd.get("content-type", "").startswith("image/png"):
                raise H.Fail("GET /v1/jobs/%s/image through the proxy: %d %s" % (job_id, code, hd.get("content-type")))
            H.png_decode(img)
    print("ok: POST then GET stream, status and image routed by job id: %s"
          % ", ".join("%s %d jobs" % (n, len(v)) for n, v in sorted(served.items())))

    # 2. POST with Accept: text/event-stream through the proxy.
    for i in range(2):
        p = dict(SMALL, seed=200 + i)
        job_id, events, png = H.run_job(base, p, stream_in_post=True)
        check_png(png, p, "streamed POST job %s" % job_id)
        node_of(job_id)
    print("ok: POST with Accept: text/event-stream completes through the proxy")

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
            raise H.Fail("no event within 20 s of a streamed POST through the proxy: the proxy buffers the stream")
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
        H.request(base, "DELETE", "/v1/jobs/" + job_id)  # through the proxy: routed by prefix as well
    for n, job_id in blockers:
        wait_status(n.base(), job_id, ("cancelled", "complete"), timeout=120)
    print("ok: the first event of a streamed POST arrives while the job is queued (not buffered by the proxy)")

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
    if code != dead_status:
        raise H.Fail("GET of a job on the dead node: %d, expected %d from the proxy" % (code, dead_status))
    st, _, js = H.http_json(base, "GET", "/ready")
    if st != 200:
        raise H.Fail("GET /ready through the proxy with one node down: %d %r" % (st, js))
    print("ok: node-a killed: 4 new jobs completed on node-b, /ready 200, node-a's jobs %d" % dead_status)


def proxy_test(name, package, launch, dead_status):
    """A whole proxy test: exit code 77 when program name is not installed (Debian package `package`);
    else two nodes, launch(program, tmp, node_a, node_b, port) starting the proxy on 127.0.0.1:port and
    returning its base URL, fleet_checks() through it, and cleanup. Returns 0; a failed check raises."""
    program = find_program(name)
    if not program:
        print("SKIP: %s is not installed (Debian: apt-get install %s)" % (name, package))
        return 77
    tmp, a, b = start_nodes("fleet-%s-" % name)
    port = H.free_port()
    base = launch(program, tmp, a, b, port)
    print("nodes %s (node-a), %s (node-b); %s on %s" % (a.addr, b.addr, name, base))
    fleet_checks(base, a, b, dead_status=dead_status)
    stop_all()
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")
    return 0


def run_main(main):
    """Exits with main()'s code, or 1 after printing FAIL: and the reason when a check fails or a step
    errs; every process started through this module is stopped either way."""
    try:
        rc = main()
    except (H.Fail, OSError, subprocess.CalledProcessError, ValueError, KeyError) as e:
        print("FAIL: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        stop_all()
    sys.exit(rc)
