"""test_clients_webui.py: runs tests/clients/webui.test.mjs (Chromium through playwright-core) against
the built-in page of a service with API keys and a LoRA folder; leaves screenshots at build/tmp/webui.png
(the end) and webui-mask.png (the painted mask). Skips (77)
only when node is absent; tools/install-deps.sh installs chromium and node_modules."""
import os
import shutil
import subprocess
import sys

import sdw
from sdw import Service
from test_clients_openai import CLIENTS, KEY, keys_file
from test_http_lora import write_lora


def test_webui_in_chromium():
    node = shutil.which("node")
    if not node:
        sdw.skip("node is not installed")
    if not os.path.isdir(os.path.join(CLIENTS, "node_modules", "playwright-core")):
        raise AssertionError("tests/clients/node_modules is missing: run tools/install-deps.sh")
    if not os.path.exists("/usr/bin/chromium"):
        raise AssertionError("/usr/bin/chromium is missing: run tools/install-deps.sh")
    svc = Service("tiny")
    # a LoRA that fits the tiny model, for the page's picker
    loras = os.path.join(svc.dir, "loras")
    os.makedirs(loras)
    write_lora(os.path.join(loras, "style.safetensors"))
    model = "step_ms=30" if sdw.FAKE else sdw.tiny_model()
    svc.extra = {"auth": {"api_keys_file": keys_file(svc)}, "model": {"path": model, "lora_dir": loras}}
    shot = os.path.join(sdw.TMP, "webui.png")
    with svc.start():
        svc.wait_ready()
        env = dict(os.environ, SDW_URL="http://127.0.0.1:%d" % svc.port, SDW_KEY=KEY, SDW_SHOT=shot)
        r = subprocess.run([node, "--test", "--test-reporter=spec", os.path.join(CLIENTS, "webui.test.mjs")],
                           env=env, cwd=CLIENTS, capture_output=True, text=True, timeout=600)
        sys.stdout.write(r.stdout[-6000:])
        sys.stdout.write(r.stderr[-3000:])
        assert r.returncode == 0, "node --test failed (%d)" % r.returncode
        assert os.path.exists(shot)
        sdw.log("screenshot: " + shot)


if __name__ == "__main__":
    sdw.main([test_webui_in_chromium])
