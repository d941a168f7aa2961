#!/usr/bin/env bash
# deb_smoke.sh: installs the built sd-worker .deb, runs the INSTALLED service as its system user on a
# tiny model (sd_notify READY=1, one image over HTTP, SIGTERM -> exit 0), then removes and purges it.
#
# usage (as root, on a test machine: it installs and purges the package system-wide):
#   tests/packaging/deb_smoke.sh [path/to/sd-worker_VERSION_amd64.deb]
# Without an argument it takes ../sd-worker_<version from debian/changelog>_amd64.deb (where `make deb`
# puts it). No systemd as PID 1 is needed: the daemon is started directly with setpriv, and a python3
# datagram listener stands in for systemd's NOTIFY_SOCKET. It refuses to run if sd-worker is already
# installed (its models would be purged) unless SDW_SMOKE_FORCE=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
step() { printf -- '--- deb_smoke: %s\n' "$*"; }
fail() { printf -- '--- deb_smoke: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs and purges the package)"
deb=${1:-}
if [ -z "$deb" ]; then
    ver=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
    deb="$src/../sd-worker_${ver}_amd64.deb"
fi
[ -f "$deb" ] || fail "no package at $deb (run 'make deb' first)"
deb=$(readlink -f "$deb")
if dpkg-query -W -f='${db:Status-Status}' sd-worker 2>/dev/null | grep -qv '^not-installed$'; then
    [ "${SDW_SMOKE_FORCE:-0}" = 1 ] || fail "sd-worker is already installed; SDW_SMOKE_FORCE=1 purges it first"
    dpkg --purge sd-worker
fi

tmp=$(mktemp -d /tmp/sdw-deb-smoke.XXXXXX)
chmod 0755 "$tmp" # the service user must reach its config and the notify socket in here
daemon_pid=""
listener_pid=""
installed=0
cleanup() {
    local rc=$?
    if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
    pkill -KILL -u sd-worker 2>/dev/null || true # only processes of the test's service user
    if [ -n "$listener_pid" ]; then
        kill -TERM "$listener_pid" 2>/dev/null || true
        wait "$listener_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        for f in "$tmp"/server.log "$tmp"/notify.log; do
            [ -f "$f" ] && { echo "--- deb_smoke: last lines of $f:"; tail -n 40 "$f"; }
        done
    fi
    if [ "$installed" = 1 ] && dpkg-query -W -f='${db:Status-Status}' sd-worker 2>/dev/null | grep -qv '^not-installed$'; then
        dpkg --purge sd-worker >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

step "install $deb"
dpkg -i "$deb"
installed=1
step "reinstall (upgrade path of the maintainer scripts)"
dpkg -i "$deb" >/dev/null

step "check the installed files"
for f in /usr/bin/sd-worker /usr/libexec/sd-worker/sd-worker-engine; do
    [ -x "$f" ] || fail "$f missing or not executable"
done
for f in /etc/sd-worker/sd-worker.yaml /lib/systemd/system/sd-worker.service /usr/lib/sysusers.d/sd-worker.conf \
    /usr/lib/tmpfiles.d/sd-worker.conf /usr/share/man/man1/sd-worker.1.gz /usr/share/doc/sd-worker/copyright \
    /usr/share/doc/sd-worker/examples/cuda-override.conf; do
    [ -f "$f" ] || fail "$f missing"
done
for f in README deployment architecture gpu; do # dh_compress gzips the larger ones
    [ -f "/usr/share/doc/sd-worker/$f.md" ] || [ -f "/usr/share/doc/sd-worker/$f.md.gz" ] ||
        fail "/usr/share/doc/sd-worker/$f.md missing"
done
dpkg-query -W -f='${Conffiles}\n' sd-worker | grep -q '/etc/sd-worker/sd-worker.yaml' ||
    fail "/etc/sd-worker/sd-worker.yaml is not a conffile"
getent passwd sd-worker >/dev/null || fail "user sd-worker was not created"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd sd-worker)
[ "$home" = /var/lib/sd-worker ] || fail "sd-worker's home is $home, expected /var/lib/sd-worker"
[ "$uid" -lt 1000 ] || fail "sd-worker is not a system user (uid $uid)"
case "$shell" in */nologin | */false) ;; *) fail "sd-worker has a login shell: $shell" ;; esac
for d in /var/lib/sd-worker /var/lib/sd-worker/models; do
    [ -d "$d" ] || fail "$d missing"
    [ "$(stat -c %U "$d")" = sd-worker ] || fail "$d is owned by $(stat -c %U "$d"), not sd-worker"
done
sd-worker version
man -l /usr/share/man/man1/sd-worker.1.gz >/dev/null 2>&1 || fail "the man page does not render"

step "systemd-analyze verify and security"
out=$(systemd-analyze verify /lib/systemd/system/sd-worker.service 2>&1) || fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify printed: $out"
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/sd-worker.service 2>/dev/null |
    sed -n 's/.*Overall exposure level for sd-worker.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e < 4.0) }' || fail "exposure $exposure is not under 4.0"
# the CUDA drop-in, installed as docs/gpu.md says: the unit with it still verifies silently
dropin=/etc/systemd/system/sd-worker.service.d
made=0
[ -d "$dropin" ] || { mkdir -p "$dropin" && made=1; }
cp /usr/share/doc/sd-worker/examples/cuda-override.conf "$dropin/zz-sdw-smoke-cuda.conf"
rc=0
out=$(systemd-analyze verify /lib/systemd/system/sd-worker.service 2>&1) || rc=$?
rm -f "$dropin/zz-sdw-smoke-cuda.conf"
[ "$made" = 0 ] || rmdir "$dropin"
[ "$rc" = 0 ] && [ -z "$out" ] || fail "systemd-analyze verify with the CUDA drop-in (rc $rc) printed: $out"
echo "systemd-analyze verify: clean; security exposure: $exposure"

step "check the installed configuration"
sd-worker check-config --config /etc/sd-worker/sd-worker.yaml

step "write a tiny model into /var/lib/sd-worker/models"
model=/var/lib/sd-worker/models/model.safetensors
grep -Eq "^[[:space:]]*path:[[:space:]]*\"?$model\"?[[:space:]]*(#.*)?$" /etc/sd-worker/sd-worker.yaml ||
    fail "the installed config does not point model.path at $model"
sd-worker mkmodel --preset tiny --output "$model"
chown sd-worker:sd-worker "$model"

step "start the installed daemon as sd-worker with NOTIFY_SOCKET"
port=$(python3 "$here/sdw_http.py" free-port)
cfg="$tmp/sd-worker.yaml"
if grep -q '^listen:' /etc/sd-worker/sd-worker.yaml; then
    sed -E "s|^listen:.*|listen: \"127.0.0.1:$port\"|" /etc/sd-worker/sd-worker.yaml >"$cfg"
else
    { cat /etc/sd-worker/sd-worker.yaml; printf '\nlisten: "127.0.0.1:%s"\n' "$port"; } >"$cfg"
fi
chmod 0644 "$cfg"
sd-worker check-config --config "$cfg" >/dev/null
python3 "$here/notify_listener.py" "$tmp/notify.sock" "$tmp/notify.log" --timeout 900 &
listener_pid=$!
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
[ -S "$tmp/notify.sock" ] || fail "the notify listener did not start"
setpriv --reuid=sd-worker --regid=sd-worker --init-groups --reset-env \
    env NOTIFY_SOCKET="$tmp/notify.sock" /usr/bin/sd-worker serve --config "$cfg" 2>"$tmp/server.log" &
daemon_pid=$!

step "wait for READY=1"
for _ in $(seq 1200); do
    grep -q '^READY=1\|[|]READY=1' "$tmp/notify.log" 2>/dev/null && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited before READY=1"
    sleep 0.1
done
grep -q '^READY=1\|[|]READY=1' "$tmp/notify.log" || fail "no READY=1 within 120 s"
echo "notify: $(tr '\n' ' ' <"$tmp/notify.log")"
[ "$(ps -o user= -p "$daemon_pid" | tr -d ' ')" = sd-worker ] || fail "the daemon does not run as sd-worker"
workers=0
for p in $(pgrep -u sd-worker); do
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/libexec/sd-worker/sd-worker-engine ] && workers=$((workers + 1))
done
[ "$workers" -ge 1 ] || fail "no worker process runs /usr/libexec/sd-worker/sd-worker-engine as sd-worker"
echo "daemon pid $daemon_pid runs as sd-worker with $workers worker process(es) from /usr/libexec/sd-worker"

step "generate one image over HTTP"
python3 "$here/sdw_http.py" generate "http://127.0.0.1:$port" --width 64 --height 64 --steps 4 --seed 7 \
    --out "$tmp/smoke.png"

step "SIGTERM -> exit 0"
kill -TERM "$daemon_pid"
for _ in $(seq 600); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$daemon_pid" 2>/dev/null && fail "the daemon is still running 60 s after SIGTERM"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" -eq 0 ] || fail "the daemon exited with $rc after SIGTERM"
sleep 0.2
grep -q 'STOPPING=1' "$tmp/notify.log" || fail "no STOPPING=1 sent on shutdown"
if pgrep -u sd-worker >/dev/null; then fail "processes of sd-worker remain: $(pgrep -a -u sd-worker)"; fi
echo "daemon exited 0; no sd-worker processes remain"

step "dpkg --remove keeps the conffile and the state"
pkgfiles=$(dpkg -L sd-worker)
dpkg --remove sd-worker >/dev/null
[ ! -e /usr/bin/sd-worker ] || fail "/usr/bin/sd-worker still there after remove"
[ -f /etc/sd-worker/sd-worker.yaml ] || fail "the conffile went away on remove (only purge may delete it)"
[ -f "$model" ] || fail "/var/lib/sd-worker went away on remove (only purge may delete it)"

step "dpkg --purge leaves nothing behind"
dpkg --purge sd-worker >/dev/null
installed=0
left=""
for p in /etc/sd-worker /var/lib/sd-worker /usr/libexec/sd-worker /usr/bin/sd-worker /usr/share/doc/sd-worker \
    /etc/systemd/system/multi-user.target.wants/sd-worker.service \
    /var/lib/systemd/deb-systemd-helper-enabled/sd-worker.service.dsh-also; do
    [ -e "$p" ] || [ -L "$p" ] && left="$left $p"
done
while IFS= read -r p; do
    [ -n "$p" ] && [ ! -d "$p" ] && { [ -e "$p" ] || [ -L "$p" ]; } && left="$left $p"
done <<<"$pkgfiles"
[ -z "$left" ] || fail "left after purge:$left"
getent passwd sd-worker >/dev/null && echo "user sd-worker kept after purge (Debian convention; see docs/deployment.md)"
step "PASS"
