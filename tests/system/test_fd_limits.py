"""test_fd_limits.py: the supervisor under a tiny RLIMIT_NOFILE (64, soft and hard) and many more
connections than that: it does not spin on EMFILE (low CPU time), a killed worker is respawned while
the connections are held, and /health answers once they close."""
import os
import resource
import signal
import socket
import time

import sdw
from sdw import Service, expect

NOFILE = 64
CONNS = 300


def lower_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_exhaustion():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CONNS + 64:
        sdw.skip("this test process may open only %d descriptors" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    with Service("fdlimit", preexec_fn=lower_nofile) as svc:
        svc.wait_ready()
        old = svc.worker_pids()
        expect(len(old) == 1, "worker pids %r" % old, svc)
        cpu0 = cpu_seconds(svc.proc.pid)
        try:
            for _ in range(CONNS):
                s = socket.socket()
                s.settimeout(5)
                s.connect(("127.0.0.1", svc.port))  # the backlog completes it even if never accepted
                socks.append(s)
            time.sleep(2)
            used = cpu_seconds(svc.proc.pid) - cpu0
            sdw.log("supervisor CPU with %d connections held 2 s: %.2f s" % (CONNS, used))
            # spinning on accept4/EMFILE burns a whole core: ~2 s here
            expect(used < 0.5, "supervisor used %.2f s CPU in 2 s with %d connections" % (used, CONNS), svc)

            os.kill(old[0], signal.SIGKILL)
            deadline = time.time() + 20
            while time.time() < deadline:
                now = svc.worker_pids()
                if now and now != old:
                    break
                time.sleep(0.1)
            expect(svc.worker_pids() and svc.worker_pids() != old,
                   "worker not respawned while %d connections were held" % CONNS, svc)
            expect(not svc.log_has("worker_spawn_failed"), "a respawn failed", svc)
            expect(svc.log_has("max_connections_lowered"), "no max_connections_lowered warning", svc)
        finally:
            for s in socks:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        t0 = time.time()
        st, _, _ = svc.request("GET", "/health", timeout=10)
        expect(st == 200, "/health %s" % st, svc)
        expect(time.time() - t0 < 5, "/health took %.1f s" % (time.time() - t0), svc)
        svc.wait_workers(lambda ws: ws[0]["state"] == "ready")


if __name__ == "__main__":
    sdw.main([test_fd_exhaustion])
