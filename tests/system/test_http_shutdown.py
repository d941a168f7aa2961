"""test_http_shutdown.py: SIGTERM with a running and a queued job (the running one finishes within the
grace period, the queued one ends with shutting_down, the listener closes, /ready answers 503 on an open
connection, exit 0 with no worker left), the grace period running out, and a second signal forcing it."""
import os
import signal
import socket
import time

import sdw
from sdw import Service, expect


def no_workers_left(pids):
    alive = []
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(p)
        except OSError:
            pass
    return not alive


def test_graceful_drain():
    with Service("drain", workers={"shutdown_grace_s": 30}) as svc:
        svc.wait_ready()
        params = sdw.slow_job(3, prompt="finish me")
        a = svc.submit(**params)
        b = svc.submit(prompt="never started", steps=2, width=64, height=64)
        sa, sb = svc.stream(a["sse_url"]), svc.stream(b["sse_url"])
        expect(sa.until("progress") is not None, "a never progressed", svc)
        keep = svc.conn()
        st, _, _ = svc.request("GET", "/health", conn=keep)
        expect(st == 200, "health on the kept connection", svc)
        pids = svc.worker_pids()
        svc.signal(signal.SIGTERM)
        evs_b = sb.read_all()
        expect(evs_b[-1][0] == "error" and evs_b[-1][1]["code"] == "shutting_down", "queued job: %r" % evs_b, svc)
        # new connections are refused once the listener is closed
        deadline = time.time() + 5
        refused = False
        while time.time() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", svc.port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                refused = True
        expect(refused, "listener still accepting after SIGTERM", svc)
        # a connection opened before still gets answers: not ready any more
        st, _, body = svc.request("GET", "/ready", conn=keep)
        expect(st == 503 and b"shutting down" in body, "ready while draining: %s %r" % (st, body), svc)
        evs_a = sa.read_all()
        expect(evs_a[-1][0] == "complete", "running job was not allowed to finish: %r" % [e for e, _ in evs_a], svc)
        sdw.check_b64png(evs_a[-1][1]["image"], params["width"], params["height"])
        rc = svc.wait_exit(30)
        expect(rc == 0, "exit code %s" % rc, svc)
        expect(no_workers_left(pids), "workers left behind: %r" % pids, svc)
        expect(svc.log_has("event=stopped"), "no stopped line", svc)


def test_grace_runs_out():
    with Service("grace", workers={"shutdown_grace_s": 1}) as svc:
        svc.wait_ready()
        a = svc.submit(**sdw.slow_job(30, prompt="too long"))
        sa = svc.stream(a["sse_url"])
        expect(sa.until("progress") is not None, "a never progressed", svc)
        t0 = time.time()
        svc.signal(signal.SIGTERM)
        evs = sa.read_all()
        expect(evs[-1][0] == "error" and evs[-1][1]["code"] == "shutting_down", "after the grace period: %r" % evs[-1:], svc)
        rc = svc.wait_exit(30)
        expect(rc == 0 and time.time() - t0 < 15, "exit %s after %.1f s" % (rc, time.time() - t0), svc)


def test_second_signal_forces():
    with Service("force", workers={"shutdown_grace_s": 60}) as svc:
        svc.wait_ready()
        a = svc.submit(**sdw.slow_job(30, prompt="interrupted"))
        sa = svc.stream(a["sse_url"])
        expect(sa.until("progress") is not None, "a never progressed", svc)
        pids = svc.worker_pids()
        t0 = time.time()
        svc.signal(signal.SIGTERM)
        time.sleep(0.3)
        expect(svc.proc.poll() is None, "exited before the second signal although a job runs", svc)
        svc.signal(signal.SIGINT)
        evs = sa.read_all()
        expect(evs and evs[-1][0] == "error" and evs[-1][1]["code"] == "shutting_down", "forced: %r" % evs[-1:], svc)
        rc = svc.wait_exit(15)
        expect(rc == 0 and time.time() - t0 < 10, "exit %s after %.1f s" % (rc, time.time() - t0), svc)
        time.sleep(0.5)
        expect(no_workers_left(pids), "workers left behind: %r" % pids, svc)


if __name__ == "__main__":
    sdw.main([test_graceful_drain, test_grace_runs_out, test_second_signal_forces])
