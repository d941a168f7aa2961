#!/usr/bin/env python3
# test_check_config.py: `sd-worker check-config --config F` on good and bad files: exit codes, the
# "file: ok" line, and the exact file:line:column messages on stderr. Python 3 stdlib only.
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # the helpers live in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging"))
from sdw_checks import check, finish  # noqa: E402

BUILD = os.environ.get("SDW_BUILD_DIR", "build")
SOURCE = os.environ.get("SDW_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EXE = os.path.join(BUILD, "sd-worker")


def run(*args):
    p = subprocess.run([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


GOOD = """\
listen: "127.0.0.1:8080"
node_id: "node-a"
model:
  path: models/model.safetensors
  prediction: auto
devices:
  - { kind: cpu, cpus: "0-1", threads: 2 }
queue: { capacity: 32, result_ttl_s: 600 }
limits: { max_width: 1024, max_height: 1024, max_steps: 150, max_body_bytes: 1048576, request_timeout_s: 300, idle_timeout_s: 60 }
workers: { restart_backoff_ms: [250, 30000], job_timeout_s: 600, retry_on_crash: false, shutdown_grace_s: 30 }
cors: { allow_origins: ["https://app.example"] }
log: { level: info, format: json }
metrics: { enabled: true }
"""

# (file name, contents, exact stderr lines with {f} for the file's path)
BAD = [
    ("syntax.yaml", "model:\n  path: /m\n bad: 1\n",
     ["{f}:3:2: YAML syntax error: did not find expected key (while parsing a block mapping at line 1, column 1)"]),
    ("unknown.yaml", "model: {path: /m}\nqueue:\n  capacty: 3\n",
     ["{f}:3:3: unknown key 'capacty' in queue; known keys: capacity, result_ttl_s"]),
    ("type.yaml", "model: {path: /m}\nqueue: { capacity: \"32\" }\n",
     ["{f}:2:20: queue.capacity: expected an integer, got string \"32\""]),
    ("range.yaml", "model: {path: /m}\nlimits:\n  max_width: 1020\n  max_steps: 151\n  max_batch: 17\n",
     ["{f}:3:14: limits.max_width: must be a multiple of 8 from 64 to 2048 (got 1020)",
      "{f}:4:14: limits.max_steps: must be between 1 and 150 (got 151)",
      "{f}:5:14: limits.max_batch: must be between 1 and 16 (got 17)"]),
    ("dup.yaml", "model: {path: /m}\nlisten: 127.0.0.1:1\nlisten: 127.0.0.1:2\n",
     ["{f}:3:1: duplicate key 'listen' (first defined at line 2, column 1)"]),
    ("nomodel.yaml", "listen: 127.0.0.1:8080\n",
     ["{f}:1:1: missing required key model.path (the checkpoint file, e.g. "
      "/var/lib/sd-worker/models/model.safetensors)"]),
    ("nodevices.yaml", "model: {path: /m}\ndevices: []\n",
     ["{f}:2:10: devices: must list at least one device (e.g. - { kind: cpu })"]),
    ("kind.yaml", "model: {path: /m}\ndevices:\n  - kind: gpu\n",
     ["{f}:3:11: devices[0].kind: must be one of cpu, cuda (got 'gpu')"]),
    ("cpus.yaml", "model: {path: /m}\ndevices:\n  - { kind: cpu, cpus: \"0-3,x\" }\n",
     ["{f}:3:24: devices[0].cpus: invalid CPU list '0-3,x': expected CPU numbers and ranges like \"0-3,5\""]),
    ("listen.yaml", "listen: localhost\nmodel: {path: /m}\n",
     ["{f}:1:9: listen: expected host:port (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or \"[::1]:8080\"), got 'localhost'"]),
    ("nodeid.yaml", "node_id: \"my node\"\nmodel: {path: /m}\n",
     ["{f}:1:10: node_id: must be 1 to 32 characters from A-Z a-z 0-9 _ - (got string \"my node\")"]),
    ("backoff.yaml", "model: {path: /m}\nworkers:\n  restart_backoff_ms: [30000, 250]\n",
     ["{f}:3:23: workers.restart_backoff_ms: min 30000 is greater than max 250"]),
]


def main():
    if not os.access(EXE, os.X_OK):
        print("FAIL %s is not built" % EXE)
        return 1
    with tempfile.TemporaryDirectory(prefix="sdw-check-config-") as tmp:
        good = write(tmp, "good.yaml", GOOD)
        rc, out, err = run("check-config", "--config", good)
        check(rc == 0, "good config: exit 0", "rc=%d stderr=%r" % (rc, err))
        check(out == good + ": ok\n", "good config: prints '<file>: ok'", repr(out))
        check(err == "", "good config: nothing on stderr", repr(err))
        rc, out, err = run("check-config", "--config=" + good)
        check(rc == 0 and out == good + ": ok\n", "--config=FILE form", "rc=%d %r %r" % (rc, out, err))

        packaged = os.path.join(SOURCE, "packaging", "sd-worker.yaml")
        if os.path.exists(packaged):
            rc, out, err = run("check-config", "--config", packaged)
            check(rc == 0 and out.endswith(": ok\n"), "packaged default config is valid", "rc=%d %r" % (rc, err))

        for name, text, want in BAD:
            f = write(tmp, name, text)
            rc, out, err = run("check-config", "--config", f)
            lines = [w.replace("{f}", f) for w in want]
            check(rc == 1, name + ": exit 1", "rc=%d" % rc)
            check(err.splitlines() == lines, name + ": message", "got %r, want %r" % (err, lines))
            check(out == "", name + ": nothing on stdout", repr(out))

        missing = os.path.join(tmp, "absent.yaml")
        rc, out, err = run("check-config", "--config", missing)
        check(rc == 1, "missing file: exit 1", "rc=%d" % rc)
        check(err == missing + ": cannot open: No such file or directory\n", "missing file: message", repr(err))

        rc, out, err = run("check-config", "--config", tmp)
        check(rc == 1 and err == tmp + ": not a regular file\n", "directory: exit 1 and message", "rc=%d %r" % (rc, err))

        rc, out, err = run("check-config")
        check(rc == 1 and "--config FILE is required" in err, "no --config: exit 1", "rc=%d %r" % (rc, err))

        rc, out, err = run("check-config", "--help")
        check(rc == 0 and "check-config --config FILE" in out, "--help: exit 0 and usage", "rc=%d %r" % (rc, out))

    return finish()


if __name__ == "__main__":
    sys.exit(main())
