"""test_clients_openai.py: runs tests/clients/openai.test.mjs (the official openai npm SDK) against a
service with API keys. Skips (77) only when node is absent; a missing node_modules is a failure, since
tools/install-deps.sh installs it."""
import os
import shutil
import subprocess
import sys

import sdw
from sdw import Service

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
CLIENTS = os.path.join(SRC, "tests", "clients")
KEY = "sdw-test-key-0123456789abcdef"


def keys_file(svc):
    path = os.path.join(svc.dir, "keys")
    r = subprocess.run([os.path.join(sdw.BUILD, "sd-worker"), "hash-key", "ci"], input=KEY + "\n",
                       capture_output=True, text=True, check=True)
    with open(path, "w") as f:
        f.write("# test keys\n" + r.stdout)
    return path


def test_openai_sdk():
    node = shutil.which("node")
    if not node:
        sdw.skip("node is not installed")
    if not os.path.isdir(os.path.join(CLIENTS, "node_modules", "openai")):
        raise AssertionError("tests/clients/node_modules is missing: run tools/install-deps.sh")
    svc = Service("tiny")
    svc.extra = {"auth": {"api_keys_file": keys_file(svc)}}
    with svc.start():
        svc.wait_ready()
        env = dict(os.environ, SDW_URL="http://127.0.0.1:%d" % svc.port, SDW_KEY=KEY)
        r = subprocess.run([node, "--test", "--test-reporter=spec", os.path.join(CLIENTS, "openai.test.mjs")],
                           env=env, cwd=CLIENTS, capture_output=True, text=True, timeout=600)
        sys.stdout.write(r.stdout[-6000:])
        sys.stdout.write(r.stderr[-3000:])
        assert r.returncode == 0, "node --test failed (%d)" % r.returncode
        assert KEY not in svc.log_text(), "the key appeared in the log"
        assert "key=ci" in svc.log_text(), "the access log names the key"


if __name__ == "__main__":
    sdw.main([test_openai_sdk])
