"""test_http_workers.py: jobs against worker processes: two devices serving in parallel, queue full (429 with
Retry-After), cancel of a queued and of a running job, and SIGKILL of a worker mid-job (error
worker_crashed, the worker comes back, the next job completes; with retry_on_crash the job survives)."""
import os
import signal
import threading
import time

import sdw
from sdw import Service, expect


def collect(svc, path, out, key):
    """Reads a stream in a thread: out[key] = [(time, event, data)...]."""
    def run():
        items = []
        s = svc.stream(path)
        for ev, data in s:
            items.append((time.time(), ev, data))
        out[key] = items
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_two_devices_in_parallel():
    if (os.cpu_count() or 1) < 2:
        sdw.skip("needs 2 CPUs for two pinned workers")
    with Service("parallel", devices=2) as svc:
        svc.wait_ready()
        svc.wait_workers(lambda ws: all(w["state"] == "ready" for w in ws))
        jobs = [svc.submit(**sdw.slow_job(2, prompt="p%d" % i)) for i in range(2)]
        out = {}
        threads = [collect(svc, j["sse_url"], out, j["job_id"]) for j in jobs]
        for t in threads:
            t.join(120)
        starts, ends, devices = [], [], set()
        for j in jobs:
            evs = out[j["job_id"]]
            names = [e for _, e, _ in evs]
            expect(names[-1] == "complete", "job %s events %r" % (j["job_id"], names), svc)
            started = [(t, d) for t, e, d in evs if e == "started"]
            expect(started, "no started event for %s" % j["job_id"], svc)
            starts.append(started[0][0])
            devices.add(started[0][1]["device"])
            ends.append(evs[-1][0])
        expect(devices == {"cpu:0", "cpu:1"}, "devices used %r" % devices, svc)
        # both ran at once: each started before the other ended
        expect(max(starts) < min(ends), "jobs did not overlap: starts %r ends %r" % (starts, ends), svc)
        _, _, doc = svc.json("GET", "/ready")
        expect(sorted(w["jobs_served"] for w in doc["workers"]) == [1, 1], "jobs served %r" % doc["workers"], svc)


def test_queue_full_and_cancel():
    with Service("cancel", queue={"capacity": 1}) as svc:
        svc.wait_ready()
        a = svc.submit(**sdw.slow_job(6, prompt="long a"))
        b = svc.submit(prompt="queued b", steps=2, width=64, height=64)
        expect(a["queue_position"] == 0 and b["queue_position"] == 1, "positions %r %r" % (a, b), svc)
        st, h, doc = svc.json("POST", "/v1/jobs", {"prompt": "c", "steps": 1, "width": 64, "height": 64})
        expect(st == 429 and doc["error"]["code"] == "queue_full", "queue full: %s %r" % (st, doc), svc)
        expect(int(h.get("retry-after", "0")) >= 1, "Retry-After %r" % h, svc)

        bs = svc.stream(b["sse_url"])
        first = next(bs)
        expect(first == ("queued", {"job_id": b["job_id"], "position": 1}), "queued event %r" % (first,), svc)
        st, _, doc = svc.json("DELETE", "/v1/jobs/" + b["job_id"])
        expect(st == 200 and doc["status"] == "cancelled", "cancel queued: %s %r" % (st, doc), svc)
        rest = [e for e, _ in bs.read_all()[1:]]
        expect(rest == ["cancelled"], "queued job's stream after cancel %r" % rest, svc)
        st, _, doc = svc.json("DELETE", "/v1/jobs/" + b["job_id"])
        expect(st == 200 and doc["status"] == "cancelled", "second DELETE %s %r" % (st, doc), svc)

        # the cancelled job no longer counts: c fits now
        c = svc.submit(prompt="c", steps=2, width=64, height=64)
        expect(c["queue_position"] == 1, "c %r" % c, svc)

        as_ = svc.stream(a["sse_url"])
        expect(as_.until("progress") is not None, "a never progressed", svc)
        t_cancel = time.time()
        st, _, doc = svc.json("DELETE", "/v1/jobs/" + a["job_id"])
        expect(st == 202 and doc["cancel_requested"] is True, "cancel running: %s %r" % (st, doc), svc)
        evs = as_.read_all()
        t_end = time.time()
        names = [e for e, _ in evs]
        expect(names[-1] == "cancelled" and "complete" not in names, "running job's stream %r" % names, svc)
        steps = [d["step"] for e, d in evs if e == "progress"]
        total = sdw.slow_job(6)["steps"]
        expect(not steps or steps[-1] < total, "worker ran to the end: %r of %d" % (steps[-1:], total), svc)
        expect(t_end - t_cancel < 3, "cancel took %.1f s" % (t_end - t_cancel), svc)
        done = svc.wait_status(a["job_id"], ("cancelled",))
        expect(done["step"] < total, "a %r" % done, svc)
        # the worker is free again: c runs to the end
        cdone = svc.wait_status(c["job_id"], ("complete",), 60)
        expect(cdone["status"] == "complete", "c %r" % cdone, svc)


def test_worker_killed_mid_job():
    with Service("crash", workers={"retry_on_crash": False}) as svc:
        svc.wait_ready()
        job = svc.submit(**sdw.slow_job(8, prompt="doomed"))
        s = svc.stream(job["sse_url"])
        expect(s.until("progress") is not None, "no progress before the kill", svc)
        pids = svc.worker_pids()
        expect(len(pids) == 1, "worker pids %r" % pids, svc)
        os.kill(pids[0], signal.SIGKILL)
        evs = s.read_all()
        expect(evs[-1][0] == "error" and evs[-1][1]["code"] == "worker_crashed", "after SIGKILL: %r" % evs[-1:], svc)
        st, _, doc = svc.json("GET", job["status_url"])
        expect(doc["status"] == "error" and doc["error"]["code"] == "worker_crashed", "job %r" % doc, svc)
        # the worker comes back and serves the next job
        ws = svc.wait_workers(lambda ws: ws[0]["state"] == "ready" and ws[0]["restarts"] >= 1, 60)
        expect(svc.worker_pids() != pids, "same worker pid after restart", svc)
        nxt = svc.submit(prompt="after the crash", steps=2, width=64, height=64)
        evs = svc.stream(nxt["sse_url"]).read_all()
        expect(evs[-1][0] == "complete", "next job %r" % [e for e, _ in evs], svc)
        sdw.check_b64png(evs[-1][1]["image"], 64, 64)
        expect(ws[0]["restarts"] >= 1, "restarts %r" % ws, svc)


def test_retry_on_crash():
    with Service("retry", workers={"retry_on_crash": True}) as svc:
        svc.wait_ready()
        params = sdw.slow_job(3, prompt="survivor")
        job = svc.submit(**params)
        s = svc.stream(job["sse_url"])
        expect(s.until("progress") is not None, "no progress before the kill", svc)
        os.kill(svc.worker_pids()[0], signal.SIGKILL)
        evs = s.read_all()
        names = [e for e, _ in evs]
        expect(names[-1] == "complete", "retried job ended with %r" % names, svc)
        restarted = [d for e, d in evs if e == "started" and d.get("retried")]
        expect(restarted, "no second start after the crash: %r" % names, svc)
        sdw.check_b64png(evs[-1][1]["image"], params["width"], params["height"])
        st, _, doc = svc.json("GET", job["status_url"])
        expect(doc["retried"] is True and doc["status"] == "complete", "job %r" % doc, svc)


if __name__ == "__main__":
    sdw.main([test_two_devices_in_parallel, test_queue_full_and_cancel, test_worker_killed_mid_job, test_retry_on_crash])
