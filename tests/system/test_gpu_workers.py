"""test_gpu_workers.py: what the service shows of GPU workers, on a machine without a GPU. The protocol test
double (tests/serving/fake_worker.c, model spec vram=FREE/TOTAL) reports device memory as a GPU worker does;
this checks /ready's per-worker vram_free_bytes / vram_total_bytes (absent for CPU workers), the
sdw_device_vram_free_bytes / sdw_device_vram_total_bytes gauges of /metrics (and `promtool check metrics` on
them when promtool is installed), a job whose worker's GPU fails (error device_failed, the worker restarted),
and kind: cuda: refused by check-config and serve in a build without CUDA, served in a CUDA build (SDW_CUDA_BUILD
says which, from tests/system/CMakeLists.txt)."""
import os
import re
import shutil
import subprocess
import tempfile

import sdw
from sdw import Service, expect

FAKE_WORKER = os.path.join(sdw.BUILD, "sdw-fake-worker")
FREE, TOTAL, MIB = 8000000000, 16000000000, 1 << 20
CUDA_BUILD = os.environ.get("SDW_CUDA_BUILD") == "1"
REFUSED = ("kind cuda needs a GPU backend and this build has none (use kind cpu, or an sd-worker built with "
           "-DSDW_CUDA=ON: docs/gpu.md)")


class FakeGpuService(Service):
    """A service whose workers are the fake with a model spec; devices (YAML flow mappings) replace the
    default one pinned CPU worker."""

    def __init__(self, name, spec, devices=None, **kw):
        super().__init__(name, **kw)
        self.model_override = spec
        self.engine_wrapper = FAKE_WORKER
        self.device_lines = devices

    def config_text(self):
        text = super().config_text()
        if not self.device_lines:
            return text
        return text[:text.index("devices:\n")] + "devices:\n" + "".join("  - %s\n" % d for d in self.device_lines)


def metric(text, name, device):
    """The value of name{device="device"} in an exposition text, or None."""
    m = re.search(r'^%s\{device="%s"\} (\S+)$' % (re.escape(name), re.escape(device)), text, re.M)
    return float(m.group(1)) if m else None


def metrics_text(svc):
    st, h, body = svc.request("GET", "/metrics")
    expect(st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), "metrics %s %r" % (st, h), svc)
    return body.decode("utf-8")


def promtool_check(text, svc):
    if not shutil.which("promtool"):
        sdw.log("promtool not installed (apt-get install prometheus): /metrics not linted")
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode("utf-8", "replace").strip()
    expect(r.returncode == 0 and out == "", "promtool check metrics (rc %d): %s\n%s" % (r.returncode, out, text), svc)


def test_vram_in_ready_and_metrics():
    with FakeGpuService("vram", "step_ms=5,vram=%d/%d" % (FREE, TOTAL)) as svc:
        svc.wait_ready()
        w = svc.wait_workers(lambda ws: ws[0]["state"] == "ready")[0]
        expect(w["vram_free_bytes"] == FREE and w["vram_total_bytes"] == TOTAL, "worker %r" % w, svc)
        dev = w["device"]
        text = metrics_text(svc)
        expect("# TYPE sdw_device_vram_free_bytes gauge\n" in text and
               "# TYPE sdw_device_vram_total_bytes gauge\n" in text, "no VRAM gauges:\n" + text, svc)
        expect(metric(text, "sdw_device_vram_free_bytes", dev) == FREE and
               metric(text, "sdw_device_vram_total_bytes", dev) == TOTAL, "VRAM series of %s:\n%s" % (dev, text), svc)
        promtool_check(text, svc)
        # each job's last frame reports again (the fake has 1 MiB less free after every job)
        job = svc.submit(prompt="a cat", steps=2, width=64, height=64)
        svc.wait_status(job["job_id"], ("complete",))
        w = svc.wait_workers(lambda ws: ws[0].get("vram_free_bytes") == FREE - MIB, 10)[0]
        expect(w["vram_total_bytes"] == TOTAL, "worker after a job %r" % w, svc)
        text = metrics_text(svc)
        expect(metric(text, "sdw_device_vram_free_bytes", dev) == FREE - MIB, "free after a job:\n" + text, svc)


def test_cpu_workers_show_no_vram():
    with FakeGpuService("novram", "step_ms=5") as svc:
        svc.wait_ready()
        w = svc.wait_workers(lambda ws: ws[0]["state"] == "ready")[0]
        expect("vram_free_bytes" not in w and "vram_total_bytes" not in w, "a CPU worker with VRAM %r" % w, svc)
        text = metrics_text(svc)
        expect("sdw_device_vram" not in text, "VRAM gauges without a GPU worker:\n" + text, svc)
        promtool_check(text, svc)


def test_device_failed():
    """A sticky GPU error: the job ends with error device_failed, the worker exits 5 and is restarted (not
    marked failed), and the next job runs on the new worker."""
    with FakeGpuService("devfail", "step_ms=5,vram=%d/%d" % (FREE, TOTAL)) as svc:
        svc.wait_ready()
        job = svc.submit(prompt="device_fail", steps=3, width=64, height=64)
        doc = svc.wait_status(job["job_id"], ("error",), 30)
        expect(doc["error"]["code"] == "device_failed" and "illegal memory access" in doc["error"]["message"],
               "job %r" % doc, svc)
        w = svc.wait_workers(lambda ws: ws[0]["state"] == "ready" and ws[0]["restarts"] == 1, 30)[0]
        expect(w["vram_free_bytes"] == FREE, "restarted worker %r" % w, svc)
        expect(svc.log_has("exited with status 5") and svc.log_has("device_failed"), "no exit 5 in the log", svc)
        text = metrics_text(svc)
        expect('sdw_jobs_failed_total{code="device_failed"} 1\n' in text, "failed counter:\n" + text, svc)
        nxt = svc.submit(prompt="after the failure", steps=2, width=64, height=64)
        svc.wait_status(nxt["job_id"], ("complete",), 30)


def test_kind_cuda():
    """Two workers on GPU 0 and one on GPU 1. Without CUDA: check-config and serve refuse them with the message
    that says what to do. With CUDA: served, each worker with its own device name."""
    devices = ["{ kind: cuda, gpu: 0 }", "{ kind: cuda, gpu: 0, threads: 1 }", "{ kind: cuda, gpu: 1 }"]
    if not CUDA_BUILD:
        tmp = tempfile.mkdtemp(prefix="sdw-gpu-")
        try:
            path = os.path.join(tmp, "cuda.yaml")
            with open(path, "w") as f:
                f.write("listen: 127.0.0.1:0\nmodel: { path: /nonexistent.safetensors }\ndevices:\n" +
                        "".join("  - %s\n" % d for d in devices))
            exe = os.path.join(sdw.BUILD, "sd-worker")
            r = subprocess.run([exe, "check-config", "--config", path], capture_output=True, text=True, timeout=30)
            want = "".join("%s: devices[%d]: device %s: %s\n" % (path, i, n, REFUSED)
                           for i, n in enumerate(["cuda:0", "cuda:0#2", "cuda:1"]))
            expect(r.returncode == 1 and r.stdout == "" and r.stderr == want,
                   "check-config: rc %d\n%r\nwant\n%r" % (r.returncode, r.stderr, want))
            env = dict(os.environ, SDW_ENGINE=FAKE_WORKER)
            env.pop("NOTIFY_SOCKET", None)
            r = subprocess.run([exe, "serve", "--config", path], capture_output=True, text=True, timeout=30, env=env)
            expect(r.returncode == 1 and "event=startup_failed" in r.stderr and
                   ("device cuda:0: " + REFUSED) in r.stderr,
                   "serve: rc %d\n%s" % (r.returncode, r.stderr))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    with FakeGpuService("cuda", "step_ms=5,vram=%d/%d" % (FREE, TOTAL), devices=devices) as svc:
        svc.wait_ready()
        ws = svc.wait_workers(lambda ws: all(w["state"] == "ready" for w in ws))
        expect([w["device"] for w in ws] == ["cuda:0", "cuda:0#2", "cuda:1"], "devices %r" % ws, svc)
        expect(all(w["vram_total_bytes"] == TOTAL for w in ws), "workers %r" % ws, svc)
        text = metrics_text(svc)
        for dev in ("cuda:0", "cuda:0#2", "cuda:1"):
            expect(metric(text, "sdw_device_vram_total_bytes", dev) == TOTAL, "%s:\n%s" % (dev, text), svc)
        promtool_check(text, svc)


if __name__ == "__main__":
    sdw.main([test_vram_in_ready_and_metrics, test_cpu_workers_show_no_vram, test_device_failed, test_kind_cuda])
