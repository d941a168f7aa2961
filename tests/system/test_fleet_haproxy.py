#!/usr/bin/env python3
# test_fleet_haproxy.py: HAProxy with deploy/haproxy/haproxy.cfg in front of two sd-worker nodes on loopback:
# the same checks as test_fleet_nginx.py (job flows, routing by job-id prefix, unbuffered SSE, failover).
"""Skips (exit 77) when haproxy is not installed. Everything runs as the calling user on 127.0.0.1, in a
temporary folder under $SDW_BUILD_DIR/tmp; every process started here is stopped, also on failure."""
import os
import shutil
import subprocess
import sys
import time

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.dont_write_bytecode = True  # the helpers live in the source tree
sys.path.insert(0, os.path.join(SRC, "tests", "packaging"))
import sdw_fleet as F  # noqa: E402
import sdw_http as H  # noqa: E402


def render(tmp, a, b, port):
    """deploy/haproxy/haproxy.cfg with the example's addresses and port replaced; logs to stderr."""
    with open(os.path.join(SRC, "deploy", "haproxy", "haproxy.cfg")) as f:
        cfg = f.read()
    for old, new in (("10.0.0.11:8080", a.addr), ("10.0.0.12:8080", b.addr), ("bind :80", "bind 127.0.0.1:%d" % port),
                     ("log /dev/log local0", "log stderr format short local0")):
        if old not in cfg:
            raise H.Fail("deploy/haproxy/haproxy.cfg no longer contains %r: update this test with it" % old)
        cfg = cfg.replace(old, new)
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    return path


def start_haproxy(haproxy, cfg, port, log):
    p = F.start("haproxy", [haproxy, "-db", "-f", cfg], stdout=log, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until its active checks have found both nodes ready
        if p.poll() is not None:
            raise H.Fail("haproxy exited with %d; see %s" % (p.returncode, log.name))
        try:
            if H.request(base, "GET", "/ready", timeout=2)[0] == 200:
                return base
        except OSError:
            pass
        time.sleep(0.2)
    raise H.Fail("haproxy did not answer /ready on %s" % base)


def main():
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not haproxy:
        print("SKIP: haproxy is not installed (Debian: apt-get install haproxy)")
        return 77
    tmp, a, b = F.start_nodes("fleet-haproxy-")
    port = H.free_port()
    log = open(os.path.join(tmp, "haproxy.log"), "w")
    base = start_haproxy(haproxy, render(tmp, a, b, port), port, log)
    print("nodes %s (node-a), %s (node-b); haproxy on %s" % (a.addr, b.addr, base))
    F.fleet_checks(base, a, b, dead_status=503)
    F.stop_all()
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
        F.stop_all()
    sys.exit(rc)
