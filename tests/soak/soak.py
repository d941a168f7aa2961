"""soak.py: sd-worker under sustained faults on the tiny model for SOAK_SECONDS (default 180): clients submit
and cancel jobs while workers are SIGKILLed and SIGSTOPped, the configuration is reloaded (SIGHUP),
malformed requests arrive and the queue is flooded. Then it checks that every accepted job ended exactly
once (one end line in the log, a terminal status), that the supervisor holds no more descriptors and not
much more memory than at the start, and that no worker outlived the service; and prints the figures.

    SOAK_SECONDS=3600 python3 tests/soak/soak.py      (or: cd build && SOAK_SECONDS=3600 ctest -L soak -V)
"""
import collections
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
import sdw  # noqa: E402
from sdw import Service  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
RSS_SLACK_KB = 16 * 1024  # allowed growth of the supervisor's resident memory
TTL_S = 10                # results expire quickly, so the end state holds no more jobs than the start
FD_SLACK = 2              # descriptors that may be in flight (a connection being closed) at the end


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Soak:
    def __init__(self, svc):
        self.svc = svc
        self.lock = threading.Lock()
        self.accepted = []  # job ids
        self.rejected = collections.Counter()  # status code -> count
        self.faults = collections.Counter()
        self.cancels = 0
        self.stop = threading.Event()
        self.workers_seen = set()
        self.stopped = {}  # pid -> time to SIGCONT
        self.threads_setting = 1

    def job_params(self):
        return {"prompt": "soak %d" % random.randrange(1 << 30), "steps": random.randint(1, 8), "width": 64,
                "height": 64}

    def submit(self, params=None):
        try:
            st, _, doc = self.svc.json("POST", "/v1/jobs", params or self.job_params())
        except OSError as e:
            with self.lock:
                self.rejected["conn:" + type(e).__name__] += 1
            return None
        with self.lock:
            if st == 202:
                self.accepted.append(doc["job_id"])
                return doc["job_id"]
            self.rejected[st] += 1
        return None

    def client(self):
        while not self.stop.is_set():
            self.submit()
            if random.random() < 0.05:
                with self.lock:
                    victim = random.choice(self.accepted) if self.accepted else None
                if victim:
                    try:
                        self.svc.request("DELETE", "/v1/jobs/" + victim)
                        with self.lock:
                            self.cancels += 1
                    except OSError:
                        pass
            time.sleep(random.uniform(0, 0.3))

    # -- faults --

    def sample_workers(self):
        pids = self.svc.worker_pids()
        self.workers_seen.update(pids)
        return pids

    def fault_kill(self):
        pids = self.sample_workers()
        if pids:
            os.kill(random.choice(pids), signal.SIGKILL)
            self.faults["sigkill"] += 1

    def fault_stop(self):
        pids = [p for p in self.sample_workers() if p not in self.stopped]
        if pids:
            pid = random.choice(pids)
            os.kill(pid, signal.SIGSTOP)
            # some resume before the heartbeat (1 s) finds them, most do not
            self.stopped[pid] = time.time() + random.uniform(0.3, 4)
            self.faults["sigstop"] += 1

    def resume_stopped(self, everything=False):
        now = time.time()
        for pid, t in list(self.stopped.items()):
            if everything or now >= t:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                del self.stopped[pid]

    def fault_reload(self):
        path = os.path.join(self.svc.dir, "sd-worker.yaml")
        text = open(path).read()
        new = 2 if self.threads_setting == 1 else 1
        text = text.replace("threads: %d" % self.threads_setting, "threads: %d" % new)
        self.threads_setting = new
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        self.svc.signal(signal.SIGHUP)
        self.faults["sighup"] += 1

    def fault_malformed(self):
        kind = random.choice(["json", "ctype", "garbage", "header", "params"])
        try:
            if kind == "json":
                self.svc.request("POST", "/v1/jobs", b'{"prompt": ', {"Content-Type": "application/json"})
            elif kind == "ctype":
                self.svc.request("POST", "/v1/jobs", b'{"prompt":"x"}', {"Content-Type": "text/plain"})
            elif kind == "params":
                self.svc.request("POST", "/v1/jobs", {"prompt": "x", "steps": -3, "width": 65})
            else:
                with socket.create_connection(("127.0.0.1", self.svc.port), timeout=5) as c:
                    if kind == "garbage":
                        c.sendall(bytes(random.randrange(256) for _ in range(512)) + b"\r\n\r\n")
                    else:
                        c.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
                    c.settimeout(5)
                    try:
                        c.recv(4096)
                    except OSError:
                        pass
        except OSError:
            pass
        self.faults["malformed"] += 1

    def fault_flood(self):
        ts = [threading.Thread(target=self.submit, daemon=True) for _ in range(30)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.faults["flood"] += 1

    def injector(self):
        kinds = [self.fault_kill, self.fault_stop, self.fault_reload, self.fault_malformed, self.fault_flood]
        weights = [3, 3, 1, 3, 1]
        while not self.stop.is_set():
            self.resume_stopped()
            random.choices(kinds, weights)[0]()
            self.stop.wait(random.uniform(0.5, 2.5))
            self.sample_workers()
        self.resume_stopped(everything=True)


def main():
    random.seed(SEED)
    if (os.cpu_count() or 1) < 1:
        sdw.skip("no CPU")
    svc = Service("soak", devices=2 if (os.cpu_count() or 1) >= 2 else 1,
                  queue={"capacity": 16, "result_ttl_s": TTL_S},
                  workers={"restart_backoff_ms": [50, 1000], "heartbeat_s": 1, "job_timeout_s": 30,
                           "shutdown_grace_s": 30},
                  extra={"log": {"level": "info"}})
    with svc.start():
        sup = svc.proc.pid
        svc.wait_ready(timeout=120)
        soak = Soak(svc)
        # warm up (allocator arenas, h2o pools) before the baseline
        for _ in range(8):
            soak.submit()
        for j in list(soak.accepted):
            svc.wait_status(j, ("complete", "error", "cancelled"), timeout=120)
        fds0, rss0 = proc_fds(sup), proc_rss_kb(sup)
        t0 = time.time()
        clients = [threading.Thread(target=soak.client, daemon=True) for _ in range(3)]
        inj = threading.Thread(target=soak.injector, daemon=True)
        for t in clients + [inj]:
            t.start()
        time.sleep(SECONDS)
        soak.stop.set()
        for t in clients + [inj]:
            t.join(120)
        duration = time.time() - t0

        # let everything accepted end (the log has one end line per job; its result may have expired since)
        def end_lines():
            ends, codes = collections.Counter(), {}
            with svc._lock:
                lines = list(svc.lines)
            for line in lines:
                m = re.search(r"event=job_(complete|error|cancelled) job=(\S+)(?: code=(\S+))?", line)
                if m:
                    ends[m.group(2)] += 1
                    codes[m.group(2)] = m.group(1) if m.group(1) != "error" else "error:" + m.group(3)
            return ends, codes

        deadline = time.time() + 180
        while time.time() < deadline:
            ends, codes = end_lines()
            if all(ends[j] for j in soak.accepted):
                break
            time.sleep(0.5)
        time.sleep(TTL_S + 3)  # every result expired: the registry is back to tombstones only
        svc.wait_workers(lambda ws: ws and all(w["state"] == "ready" for w in ws), timeout=60)
        time.sleep(1.5)
        fds1, rss1 = proc_fds(sup), proc_rss_kb(sup)
        soak.sample_workers()
        svc.stop(timeout=60)
        time.sleep(0.5)
        orphans = [p for p in soak.workers_seen if alive(p)]

        ends, codes = end_lines()
        accepted = set(soak.accepted)
        not_once = {j: ends[j] for j in accepted if ends[j] != 1}
        foreign = [j for j in ends if j not in accepted]
        by = collections.Counter(codes[j] if ends[j] else "lost" for j in accepted)
        lost = len(not_once)
        report = {
            "seed": SEED,
            "duration_s": round(duration, 1),
            "jobs_submitted": len(soak.accepted) + sum(soak.rejected.values()),
            "jobs_accepted": len(soak.accepted),
            "rejected": dict((str(k), v) for k, v in soak.rejected.items()),
            "ended": dict(by),
            "cancel_requests": soak.cancels,
            "lost": lost,
            "ended_not_exactly_once": len(not_once),
            "faults": dict(soak.faults),
            "workers_seen": len(soak.workers_seen),
            "supervisor_fds": [fds0, fds1],
            "supervisor_rss_kb": [rss0, rss1],
            "orphans": orphans,
        }
        print(json.dumps(report, indent=1), flush=True)
        problems = []
        if lost:
            problems.append("lost jobs: %d (not exactly once: %r)" % (lost, dict(list(not_once.items())[:10])))
        if foreign:
            problems.append("ends of jobs never accepted: %r" % foreign[:10])
        if fds1 > fds0 + FD_SLACK:
            problems.append("descriptors grew %d -> %d" % (fds0, fds1))
        if rss1 > rss0 + RSS_SLACK_KB:
            problems.append("RSS grew %d -> %d kB" % (rss0, rss1))
        if orphans:
            problems.append("workers alive after the service stopped: %r" % orphans)
        if problems:
            print("SOAK FAILED:\n  " + "\n  ".join(problems) + "\n--- service log ---\n" + svc.log_text(), flush=True)
            sys.exit(1)
        print("soak ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except sdw.Skip as e:
        print("skip: %s" % e)
        sys.exit(sdw.SKIP)
