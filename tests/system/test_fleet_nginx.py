#!/usr/bin/env python3
# test_fleet_nginx.py: nginx with deploy/nginx/sd-worker.conf in front of two sd-worker nodes on loopback:
# both job flows through the proxy, routing by job-id prefix, unbuffered SSE, failover when a node dies.
"""Skips (exit 77) when nginx is not installed. Everything runs as the calling user on 127.0.0.1, in a
temporary folder under $SDW_BUILD_DIR/tmp; every process started here is stopped, also on failure.
The checks themselves are in tests/packaging/sdw_fleet.py (shared with test_fleet_haproxy.py)."""
import os
import sys

sys.dont_write_bytecode = True  # the helpers live in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging"))
import sdw_fleet as F  # noqa: E402


def launch(nginx, tmp, a, b, port):
    """nginx with deploy/nginx/sd-worker.conf (the example's addresses and port replaced) included from a
    minimal nginx.conf in tmp/nginx; returns its base URL once it answers /health."""
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    with open(os.path.join(d, "sd-worker.conf"), "w") as f:
        f.write(F.render_example("nginx/sd-worker.conf", (
            ("10.0.0.11:8080", a.addr), ("10.0.0.12:8080", b.addr), ("listen 80;", "listen 127.0.0.1:%d;" % port))))
    # As root nginx would switch its worker to 'nobody', who cannot write into this private folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(user + "worker_processes 1;\nerror_log %s/error.log info;\nevents { worker_connections 512; }\n"
                "http {\n  access_log %s/access.log;\n" % (d, d) +
                "".join("  %s_temp_path %s/%s_temp;\n" % (t, d, t) for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")) +
                "  include %s/sd-worker.conf;\n}\n" % d)
    p = F.start("nginx", [nginx, "-p", d, "-c", d + "/nginx.conf", "-e", d + "/error.log",
                          "-g", "daemon off; pid %s/nginx.pid;" % d])
    return F.wait_proxy("nginx", p, "http://127.0.0.1:%d" % port, "/health", timeout=20, interval=0.1,
                        log_hint=lambda: "see %s/error.log:\n%s" % (d, open(d + "/error.log").read()[-2000:]))


if __name__ == "__main__":
    F.run_main(lambda: F.proxy_test("nginx", "nginx-light", launch, dead_status=502))
