#!/usr/bin/env python3
# test_fleet_haproxy.py: HAProxy with deploy/haproxy/haproxy.cfg in front of two sd-worker nodes on loopback:
# the same checks as test_fleet_nginx.py (job flows, routing by job-id prefix, unbuffered SSE, failover).
"""Skips (exit 77) when haproxy is not installed. Everything runs as the calling user on 127.0.0.1, in a
temporary folder under $SDW_BUILD_DIR/tmp; every process started here is stopped, also on failure."""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # the helpers live in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging"))
import sdw_fleet as F  # noqa: E402


def launch(haproxy, tmp, a, b, port):
    """haproxy on deploy/haproxy/haproxy.cfg with the example's addresses and port replaced, logging to
    haproxy.log; returns its base URL once its active checks have found both nodes ready."""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(F.render_example("haproxy/haproxy.cfg", (
            ("10.0.0.11:8080", a.addr), ("10.0.0.12:8080", b.addr), ("bind :80", "bind 127.0.0.1:%d" % port),
            ("log /dev/log local0", "log stderr format short local0"))))
    log = open(os.path.join(tmp, "haproxy.log"), "w")
    p = F.start("haproxy", [haproxy, "-db", "-f", cfg], stdout=log, stderr=subprocess.STDOUT)
    return F.wait_proxy("haproxy", p, "http://127.0.0.1:%d" % port, "/ready", timeout=30, interval=0.2,
                        log_hint=lambda: "see " + log.name)


if __name__ == "__main__":
    F.run_main(lambda: F.proxy_test("haproxy", "haproxy", launch, dead_status=503))
