#!/usr/bin/env python3
# test_link_boundary.py: the rooms of docs/architecture.md as link facts: sd-worker (the supervisor) needs no
# OpenBLAS or libpng, and sd-worker-engine and the engine library need no libh2o or libyaml.
"""Exit 0 pass, 1 fail, 77 skip (no readelf or nm: apt-get install binutils). Reads the DT_NEEDED entries of the
built executables (readelf -d) and the undefined symbols of libsdengine.a (nm -u)."""
import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # the helpers live in the source tree
from sdw_checks import check, finish  # noqa: E402

SRC = os.environ.get("SDW_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("SDW_BUILD_DIR") or os.path.join(SRC, "build"))

# (file, label, libraries it must not need: sonames matched from their start)
RULES = [
    ("sd-worker", "the supervisor", ["libopenblas", "libblas", "liblapack", "libpng"]),
    ("sd-worker-engine", "the worker (engine) binary", ["libh2o", "libyaml"]),
]
# symbol prefixes the engine library must not reference
ENGINE_LIB = os.path.join("worker", "engine", "libsdengine.a")
ENGINE_FORBIDDEN_SYMS = ["h2o_", "yaml_"]


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def main():
    if not shutil.which("readelf") or not shutil.which("nm"):
        print("SKIP: readelf/nm not installed (binutils)")
        return 77
    for name, what, banned in RULES:
        path = os.path.join(BUILD, name)
        if not os.path.exists(path):
            check(False, "%s built" % name, path)
            continue
        libs = needed(path)
        check(libs != [], "%s has NEEDED entries (a dynamic executable)" % name, " ".join(libs))
        for b in banned:
            hits = [lib for lib in libs if lib.startswith(b)]
            check(not hits, "%s (%s) does not link %s" % (name, what, b), " ".join(hits))
    lib = os.path.join(BUILD, ENGINE_LIB)
    if not os.path.exists(lib):
        check(False, "libsdengine.a built", lib)
    else:
        out = subprocess.run(["nm", "-u", lib], capture_output=True, text=True, check=True).stdout
        undef = {l.split()[-1] for l in out.splitlines() if l.strip() and not l.endswith(":")}
        check(any(s.startswith("cblas_") for s in undef), "libsdengine.a references cblas_* (the check sees symbols)")
        for p in ENGINE_FORBIDDEN_SYMS:
            hits = sorted(s for s in undef if s.startswith(p))
            check(not hits, "libsdengine.a references no %s* symbol" % p, " ".join(hits[:5]))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
