#!/bin/sh
# install-deps.sh: installs the Debian packages sd-worker needs to build, test and package, but only
# those missing, so it is quick and quiet on a machine that has them. Needs root (or sudo) to install.
set -e
PKGS="build-essential cmake pkg-config libh2o-evloop-dev libssl-dev libmsgpack-dev libyaml-dev
libopenblas-dev libpng-dev zlib1g-dev libjansson-dev libutf8proc-dev libcmocka-dev python3 curl
debhelper lintian fakeroot nginx-light prometheus wrk
systemd procps man-db haproxy python3-yaml clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
