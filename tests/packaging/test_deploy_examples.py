#!/usr/bin/env python3
# test_deploy_examples.py: keeps the deployment examples under deploy/ true: HAProxy's config passes
# `haproxy -c` without warnings, the Kubernetes manifest is consistent with the config it embeds.
"""The nginx and HAProxy examples are run for real by tests/system/test_fleet_{nginx,haproxy}.py. Exit 0 pass, 1 fail,
77 when neither haproxy nor python3-yaml is installed (tools/install-deps.sh installs both)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # the helpers live in the source tree
from sdw_checks import check, finish  # noqa: E402

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("SDW_BUILD_DIR") or os.path.join(SRC, "build"))
def check_haproxy():
    cfg = os.path.join(SRC, "deploy", "haproxy", "haproxy.cfg")
    r = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True)
    out = r.stdout + r.stderr
    bad = [l for l in out.splitlines() if "WARNING" in l or "ALERT" in l]
    check(r.returncode == 0 and not bad, "haproxy -c accepts deploy/haproxy/haproxy.cfg without warnings %r" % bad)
    text = open(cfg).read()
    # The same routing rule as the nginx example: one ACL per node id, on the job id prefix.
    for node in ("node-a", "node-b"):
        check(re.search(r"path_reg \^/v1/jobs/%s-\[0-9a-f\]\+" % node, text) is not None, "haproxy routes %s-<hex> job ids" % node)
    check("option httpchk GET /ready" in text, "haproxy checks /ready for new jobs")


def check_kubernetes(yaml):
    path = os.path.join(SRC, "deploy", "kubernetes", "sd-worker.yaml")
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {d["kind"]: d for d in docs if d["kind"] != "Service"}
    services = [d for d in docs if d["kind"] == "Service"]
    check({"ConfigMap", "StatefulSet"} <= set(kinds) and len(services) == 2, "ConfigMap, StatefulSet and two Services")
    cm, sts = kinds["ConfigMap"], kinds["StatefulSet"]
    conf = yaml.safe_load(cm["data"]["sd-worker.yaml"])
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    port = int(conf["listen"].rsplit(":", 1)[1])
    check(c["ports"][0]["containerPort"] == port, "containerPort %s = listen port %d" % (c["ports"][0]["containerPort"], port))
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness probe on /ready")
    check(c["livenessProbe"]["httpGet"]["path"] == "/health", "liveness probe on /health")
    w = conf.get("workers", {})
    need = w.get("job_timeout_s", 600) + w.get("shutdown_grace_s", 30)
    check(pod["terminationGracePeriodSeconds"] > need, "terminationGracePeriodSeconds %d > job + grace %d" % (pod["terminationGracePeriodSeconds"], need))
    check("node_id" not in conf, "node_id unset: each pod derives its own from its host name")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    check(os.path.dirname(conf["model"]["path"]) in mounts and "/etc/sd-worker" in mounts, "model and config folders mounted")
    check(sts["spec"]["serviceName"] in [s["metadata"]["name"] for s in services if s["spec"].get("clusterIP") == "None"],
          "the StatefulSet's serviceName is the headless Service")
    exe = os.path.join(BUILD, "sd-worker")
    if os.access(exe, os.X_OK):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(cm["data"]["sd-worker.yaml"])
            f.flush()
            r = subprocess.run([exe, "check-config", "--config", f.name], capture_output=True, text=True)
        check(r.returncode == 0, "sd-worker check-config accepts the ConfigMap's config (%s)" % (r.stdout + r.stderr).strip())
    else:
        print("skip: %s not built: the embedded config is not checked" % exe)


def main():
    ran = False
    if shutil.which("haproxy"):
        check_haproxy()
        ran = True
    else:
        print("skip: haproxy not installed")
    try:
        import yaml
        check_kubernetes(yaml)
        ran = True
    except ImportError:
        print("skip: python3-yaml not installed")
    if not ran:
        print("SKIP: neither haproxy nor python3-yaml is installed")
        return 77
    return finish()


if __name__ == "__main__":
    sys.exit(main())
