#!/usr/bin/env python3
# test_unit_file.py: checks the packaging sources without building a .deb: the systemd unit (settings the
# service relies on, `systemd-analyze verify` silent, security exposure < 4.0), the example drop-in for CUDA
# workers (debian/cuda-override.conf: what it relaxes, verify silent with it, exposure still < 4.0),
# sysusers, tmpfiles, man page.
"""Exit 0 pass, 1 fail, 77 skip (no systemd-analyze: apt-get install systemd)."""
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
UNIT = os.path.join(SRC, "debian", "sd-worker.service")
CUDA_DROPIN = os.path.join(SRC, "debian", "cuda-override.conf")
MAX_EXPOSURE = 4.0

def unit_settings(path):
    """{key: [values]} of the [Service] section (a key may repeat, e.g. SystemCallFilter)."""
    out, section = {}, None
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        k, _, v = line.partition("=")
        out.setdefault((section, k.strip()), []).append(v.strip())
    return out


def check_settings():
    s = unit_settings(UNIT)

    def val(k, section="[Service]"):
        v = s.get((section, k))
        return v[-1] if v else None

    want = {
        "Type": "notify",
        "ExecStart": "/usr/bin/sd-worker serve --config /etc/sd-worker/sd-worker.yaml",
        "KillMode": "mixed",
        "Restart": "on-failure",
        "User": "sd-worker",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ReadWritePaths": "/var/lib/sd-worker",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }
    for k, v in want.items():
        check(val(k) == v, "%s=%s (found %r)" % (k, v, val(k)))
    for k in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
              "RestrictNamespaces", "LockPersonality", "RestrictRealtime", "ProtectClock", "ProtectHostname"):
        check(val(k) == "yes", "%s=yes" % k)
    check("@system-service" in s.get(("[Service]", "SystemCallFilter"), []), "SystemCallFilter=@system-service")
    # GPUs are device nodes under /dev: PrivateDevices= would hide them.
    check(val("PrivateDevices") is None, "no PrivateDevices= (GPU nodes in /dev stay reachable)")
    # Longer than the longest job (workers.job_timeout_s 600) plus the drain grace (30 s).
    tss = val("TimeoutStopSec") or "0"
    check(tss.isdigit() and int(tss) > 630, "TimeoutStopSec=%s above job_timeout_s 600 + shutdown_grace_s 30" % tss)
    check(val("WantedBy", "[Install]") == "multi-user.target", "WantedBy=multi-user.target")


def verify_unit(d, what, dropin=None):
    """Writes the unit into folder d (ExecStart pointed at the build tree's binary, or any: verify insists that
    it exists), with the drop-in beside it if given; checks that systemd-analyze verify prints nothing and that
    the security exposure stays under MAX_EXPOSURE."""
    exe = os.path.join(BUILD, "sd-worker")
    if not os.access(exe, os.X_OK):
        exe = "/bin/true"
    unit = os.path.join(d, "sd-worker.service")
    with open(UNIT) as f, open(unit, "w") as g:
        g.write(f.read().replace("/usr/bin/sd-worker", exe))
    if dropin:
        os.makedirs(os.path.join(d, "sd-worker.service.d"))
        shutil.copy(dropin, os.path.join(d, "sd-worker.service.d", "cuda.conf"))
    # --man=no: the man page is only installed with the package (deb_smoke.sh runs verify with it).
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and out == "", "%s: verify prints nothing (rc %d, output %r)" % (what, r.returncode, out))
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", unit], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for sd-worker.service: ([0-9.]+)", r.stdout)
    exposure = float(m.group(1)) if m else None
    check(exposure is not None and exposure < MAX_EXPOSURE,
          "%s: systemd-analyze security exposure %s < %.1f" % (what, exposure, MAX_EXPOSURE))


def check_verify(tmp):
    verify_unit(tmp, "the unit")


def check_cuda_dropin(tmp):
    """The drop-in for CUDA workers lifts MemoryDenyWriteExecute (the driver's PTX JIT maps executable memory)
    and allows the GPU nodes under DevicePolicy=closed; the unit with it verifies and stays under 4.0."""
    s = unit_settings(CUDA_DROPIN)
    check(s.get(("[Service]", "MemoryDenyWriteExecute")) == ["no"], "drop-in: MemoryDenyWriteExecute=no")
    check(s.get(("[Service]", "DevicePolicy")) == ["closed"], "drop-in: DevicePolicy=closed")
    allow = s.get(("[Service]", "DeviceAllow"), [])
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0"):
        check(node + " rw" in allow, "drop-in: DeviceAllow=%s rw" % node)
    check(len(s) == 3, "drop-in sets nothing else: %r" % sorted(k for _, k in s))
    examples = open(os.path.join(SRC, "debian", "sd-worker.examples")).read().split()
    check("debian/cuda-override.conf" in examples, "the package installs it under /usr/share/doc/sd-worker/examples")
    d = os.path.join(tmp, "with-dropin")
    os.makedirs(d)
    verify_unit(d, "with the CUDA drop-in", CUDA_DROPIN)


def check_sysusers_tmpfiles(tmp):
    if os.geteuid() != 0:
        print("skip: sysusers/tmpfiles dry run needs root (tmpfiles chowns)")
        return
    root = os.path.join(tmp, "root")
    for sub, src in (("usr/lib/sysusers.d", "sd-worker.sysusers"), ("usr/lib/tmpfiles.d", "sd-worker.tmpfiles")):
        os.makedirs(os.path.join(root, sub))
        shutil.copy(os.path.join(SRC, "debian", src), os.path.join(root, sub, "sd-worker.conf"))
    os.makedirs(os.path.join(root, "etc"))
    r = subprocess.run(["systemd-sysusers", "--root=" + root, "sd-worker.conf"], capture_output=True, text=True)
    users = [l.split(":") for l in open(os.path.join(root, "etc", "passwd"))] if r.returncode == 0 else []
    u = [x for x in users if x[0] == "sd-worker"]
    check(r.returncode == 0 and u and u[0][5] == "/var/lib/sd-worker" and u[0][6].strip().endswith("nologin")
          and int(u[0][2]) < 1000, "sysusers creates system user sd-worker, home /var/lib/sd-worker, no login (%r)" % (u,))
    r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create", "sd-worker.conf"], capture_output=True, text=True)
    ok = r.returncode == 0
    for d in ("var/lib/sd-worker", "var/lib/sd-worker/models"):
        p = os.path.join(root, d)
        st = os.stat(p) if os.path.isdir(p) else None
        ok = ok and st is not None and oct(st.st_mode & 0o777) == "0o750" and u and st.st_uid == int(u[0][2])
    check(ok, "tmpfiles creates /var/lib/sd-worker{,/models} 0750 owned by sd-worker (%s)" % (r.stderr.strip() or "rc %d" % r.returncode))


def check_manpage():
    if not shutil.which("man"):
        print("skip: man page check (no man-db)")
        return
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", os.path.join(SRC, "packaging", "sd-worker.1")],
                       capture_output=True, text=True, env=env)
    check(r.returncode == 0 and r.stderr.strip() == "" and "sd-worker serve" in r.stdout,
          "sd-worker.1 renders without warnings (%s)" % (r.stderr.strip()[:300] or "rc %d" % r.returncode))


def main():
    if not shutil.which("systemd-analyze"):
        print("SKIP: systemd-analyze not installed (apt-get install systemd)")
        return 77
    tmp = tempfile.mkdtemp(prefix="sdw-unit-")
    try:
        check_settings()
        check_verify(tmp)
        check_cuda_dropin(tmp)
        check_sysusers_tmpfiles(tmp)
        check_manpage()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
