"""test_resilience.py: workers that go wrong without crashing: one stopped (SIGSTOP) while idle is found by
the heartbeat and replaced before a job waits on it; a model file truncated in place while serving (SIGBUS,
reported as model_changed) and then restored brings the workers back without a restart; a model that never
loads makes /ready say why and, after workers.health_fail_after_s, /health answer 503."""
import os
import shutil
import signal
import time

import sdw
from sdw import Service, expect


def own_model(svc):
    """A private copy of the tiny model for svc, so the test may damage it."""
    path = os.path.join(svc.dir, "model.safetensors")
    shutil.copyfile(sdw.tiny_model(), path)
    svc.model_override = path
    return path


def test_idle_sigstop_is_replaced():
    with Service("sigstop", workers={"job_timeout_s": 60}) as svc:  # the default heartbeat_s: 5
        svc.wait_ready()
        pid = svc.worker_pids()[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            # within two beats the stopped worker is killed and a new one is ready
            svc.wait_workers(lambda ws: ws[0]["state"] == "ready" and ws[0]["restarts"] == 1, timeout=15)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        expect(svc.log_has("event=worker_unresponsive"), "no worker_unresponsive line", svc)
        expect(pid not in svc.worker_pids(), "the stopped worker %d is still there" % pid, svc)
        t0 = time.time()
        job = svc.submit(prompt="after a stop", steps=2, width=64, height=64)
        doc = svc.wait_status(job["job_id"], ("complete", "error"), timeout=30)
        expect(doc["status"] == "complete", "job after the stop: %r" % doc, svc)
        expect(time.time() - t0 < 20, "the job took %.1f s" % (time.time() - t0), svc)


def test_model_truncated_in_place_then_restored():
    if sdw.FAKE:
        sdw.skip("needs the real engine's mmap")
    svc = Service("truncate", workers={"restart_backoff_ms": [100, 500]})
    path = own_model(svc)
    good = path + ".good"
    shutil.copyfile(path, good)
    with svc.start():
        svc.wait_ready()
        job = svc.submit(prompt="before", steps=2, width=64, height=64)
        expect(svc.wait_status(job["job_id"], ("complete", "error"))["status"] == "complete", "first job", svc)
        with open(path, "r+b") as f:  # in place: what `cp new old` or a crashed writer does
            f.truncate(4096)
        # the next job touches pages past the new end: SIGBUS
        job = svc.submit(prompt="during", steps=2, width=64, height=64)
        doc = svc.wait_status(job["job_id"], ("complete", "error"), timeout=30)
        expect(doc["status"] in ("error", "complete"), "job during: %r" % doc, svc)
        deadline = time.time() + 15
        while time.time() < deadline and not svc.log_has("model_changed: the model file changed under the worker"):
            time.sleep(0.1)
        expect(svc.log_has("model_changed: the model file changed under the worker"), "no model_changed", svc)
        svc.wait_workers(lambda ws: ws[0]["state"] == "failed", timeout=15)
        st, _, ready = svc.json("GET", "/ready")
        expect(st == 503 and "model_load_failed" in ready.get("reason", ""), "ready while truncated: %s %r" %
               (st, ready), svc)
        # put it right the atomic way: the workers come back by themselves
        tmp = path + ".tmp"
        shutil.copyfile(good, tmp)
        os.replace(tmp, path)
        svc.wait_ready(timeout=20)
        job = svc.submit(prompt="after", steps=2, width=64, height=64)
        expect(svc.wait_status(job["job_id"], ("complete", "error"))["status"] == "complete", "job after", svc)


def test_ready_reason_and_health_when_every_worker_failed():
    svc = Service("nomodel", workers={"restart_backoff_ms": [100, 400], "health_fail_after_s": 1})
    svc.model_override = os.path.join(svc.dir, "missing.safetensors") if not sdw.FAKE else "load_fail"
    with svc.start():
        svc.wait_workers(lambda ws: ws[0]["state"] == "failed", timeout=30)
        st, _, doc = svc.json("GET", "/ready")
        expect(st == 503, "/ready %s" % st, svc)
        expect("model_load_failed" in doc["reason"] and "every worker failed" not in doc["reason"],
               "reason %r" % doc["reason"], svc)
        expect(len(doc["reason"]) <= 224, "reason not shortened: %d chars" % len(doc["reason"]), svc)
        deadline = time.time() + 10
        st = None
        while time.time() < deadline:
            st, _, hdoc = svc.json("GET", "/health")
            if st == 503:
                break
            time.sleep(0.1)
        expect(st == 503 and hdoc["status"] == "failed", "/health stayed %s" % st, svc)
        expect(doc["workers"][0]["restarts"] >= 0, "workers %r" % doc["workers"], svc)
        # retried meanwhile, with backoff, and still failed
        svc.wait_workers(lambda ws: ws[0]["restarts"] >= 2 and ws[0]["state"] == "failed", timeout=15)


if __name__ == "__main__":
    sdw.main([test_idle_sigstop_is_replaced, test_model_truncated_in_place_then_restored,
              test_ready_reason_and_health_when_every_worker_failed])
