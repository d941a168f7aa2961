"""test_reload.py: SIGHUP reloads the configuration without dropping a job: a running job finishes on its
old worker, new workers start with the new settings (another model file, more threads), the old one
retires, /ready stays 200 throughout, model.precision becomes the default of later jobs; an invalid file is reported as file:line:col and the service keeps
its running configuration; a setting that needs a restart (listen) is named and kept."""
import os
import re
import shutil
import signal
import threading
import time

import sdw
from sdw import Service, expect


def poll_ready(svc, stop, codes):
    while not stop.is_set():
        try:
            st, _, _ = svc.request("GET", "/ready", timeout=5)
            codes.append(st)
        except OSError as e:
            codes.append(str(e))
        time.sleep(0.05)


def test_reload_swaps_workers_without_losing_jobs():
    svc = Service("reload")
    if not sdw.FAKE:
        first = os.path.join(svc.dir, "first.safetensors")
        shutil.copyfile(sdw.tiny_model(), first)
        svc.model_override = first
    with svc.start():
        svc.wait_ready()
        old_pids = svc.worker_pids()
        expect(len(old_pids) == 1, "workers %r" % old_pids, svc)
        running = svc.submit(**sdw.slow_job(3, prompt="spans the reload"))
        svc.wait_status(running["job_id"], ("running",), timeout=30)
        stop, codes = threading.Event(), []
        poller = threading.Thread(target=poll_ready, args=(svc, stop, codes), daemon=True)
        poller.start()
        # the new configuration: another model file and two threads
        cfg_path = os.path.join(svc.dir, "sd-worker.yaml")
        text = open(cfg_path).read()
        if not sdw.FAKE:
            second = os.path.join(svc.dir, "second.safetensors")
            shutil.copyfile(sdw.tiny_model(), second)
            text = text.replace(first, second)
        text = text.replace("threads: 1", "threads: 2")
        # and model.precision: the default of jobs submitted after the reload
        model_line = next(l for l in text.splitlines() if l.startswith("model: {"))
        text = text.replace(model_line, model_line.replace("model: {", "model: { precision: bf16,", 1))
        with open(cfg_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(cfg_path + ".tmp", cfg_path)
        svc.signal(signal.SIGHUP)
        doc = svc.wait_status(running["job_id"], ("complete", "error", "cancelled"), timeout=60)
        expect(doc["status"] == "complete", "the running job: %r" % doc, svc)
        expect(doc["params"]["precision"] == "fp32", "the running job's precision: %r" % doc["params"], svc)
        deadline = time.time() + 20
        while time.time() < deadline and (set(svc.worker_pids()) & set(old_pids) or not svc.worker_pids()):
            time.sleep(0.1)
        new_pids = svc.worker_pids()
        expect(new_pids and not set(new_pids) & set(old_pids), "old %r new %r" % (old_pids, new_pids), svc)
        stop.set()
        poller.join(10)
        expect(codes and all(c == 200 for c in codes), "/ready during the reload: %r" % sorted(set(map(str, codes))),
               svc)
        expect(svc.log_has("event=reload "), "no reload line", svc)
        expect(svc.log_has("threads=2"), "no worker with threads=2", svc)
        if not sdw.FAKE:
            expect(svc.log_has("model=second "), "no worker on the new model", svc)
        later = svc.submit(prompt="after the reload", steps=2, width=64, height=64)
        ldoc = svc.wait_status(later["job_id"], ("complete", "error"))
        expect(ldoc["status"] == "complete", "later job", svc)
        expect(ldoc["params"]["precision"] == "bf16", "model.precision after the reload: %r" % ldoc["params"], svc)
        expect(svc.worker_pids() == new_pids, "workers changed again: %r" % svc.worker_pids(), svc)

        # an invalid file: named with its line and column, nothing changes
        with open(cfg_path, "a") as f:
            f.write("queue: { capacity: [\n")
        svc.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and not svc.log_has("event=reload_failed"):
            time.sleep(0.05)
        expect(svc.log_has("event=reload_failed"), "no reload_failed line", svc)
        line = [l for l in svc.log_text().splitlines() if "event=reload_failed" in l][-1]
        expect(re.search(r"sd-worker\.yaml:\d+:\d+: ", line), "no file:line:col in %r" % line, svc)
        st, _, _ = svc.json("GET", "/ready")
        expect(st == 200, "/ready after a bad reload: %s" % st, svc)
        job = svc.submit(prompt="after a bad reload", steps=2, width=64, height=64)
        expect(svc.wait_status(job["job_id"], ("complete", "error"))["status"] == "complete", "job", svc)
        expect(svc.worker_pids() == new_pids, "a bad reload replaced workers", svc)

        # a setting that needs a restart is named and kept: the listener stays where it is
        with open(cfg_path, "w") as f:
            f.write(text.replace('listen: "127.0.0.1:0"', 'listen: "127.0.0.1:1"'))
        svc.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and not svc.log_has("event=reload_needs_restart"):
            time.sleep(0.05)
        expect(svc.log_has("event=reload_needs_restart settings=listen"), "listen not named", svc)
        svc.wait_ready(timeout=30)


if __name__ == "__main__":
    sdw.main([test_reload_swaps_workers_without_losing_jobs])
