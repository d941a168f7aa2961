#!/usr/bin/env python3
# test_fleet_nginx.py: nginx with deploy/nginx/sd-worker.conf in front of two sd-worker nodes on loopback:
# both job flows through the proxy, routing by job-id prefix, unbuffered SSE, failover when a node dies.
"""Skips (exit 77) when nginx is not installed. Everything runs as the calling user on 127.0.0.1, in a
temporary folder under $SDW_BUILD_DIR/tmp; every process started here is stopped, also on failure.
The checks themselves are in tests/packaging/sdw_fleet.py (shared with test_fleet_haproxy.py)."""
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
    p = F.start("nginx", [nginx, "-p", d, "-c", d + "/nginx.conf", "-e", d + "/error.log",
                          "-g", "daemon off; pid %s/nginx.pid;" % d])
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


def main():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not nginx:
        print("SKIP: nginx is not installed (Debian: apt-get install nginx-light)")
        return 77
    tmp, a, b = F.start_nodes("fleet-nginx-")
    port = H.free_port()
    base = start_nginx(nginx, render(tmp, a, b, port), port)
    print("nodes %s (node-a), %s (node-b); nginx on %s" % (a.addr, b.addr, base))
    F.fleet_checks(base, a, b, dead_status=502)
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
