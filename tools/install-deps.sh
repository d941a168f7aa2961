#!/bin/sh
# install-deps.sh: installs the Debian packages sd-worker needs to build, test and package, but only
# those missing, so it is quick and quiet on a machine that has them. Needs root (or sudo) to install.
set -e
PKGS="build-essential cmake pkg-config libh2o-evloop-dev libssl-dev libmsgpack-dev libyaml-dev
libopenblas-dev libpng-dev zlib1g-dev libjansson-dev libutf8proc-dev libcmocka-dev python3 curl
debhelper lintian fakeroot nginx-light prometheus wrk
systemd procps man-db haproxy python3-yaml clang libclang-rt-14-dev clang-format chromium"
# node runs the client tests (tests/clients); a machine whose nodejs already brings npm keeps it
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# the pinned openai SDK and playwright-core (package-lock.json); the network is used here only, never by tests
clients="$(dirname "$0")/../tests/clients"
if [ -f "$clients/package-lock.json" ] && [ ! -d "$clients/node_modules" ] && command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in tests/clients"
    (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error)
fi
