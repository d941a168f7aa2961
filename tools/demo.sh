#!/usr/bin/env bash
# demo.sh: `make demo`: serves a tiny self-generated model with the freshly built sd-worker on a free
# loopback port, submits one job, follows its event stream with curl and writes the image to out/demo.png.
#
# usage: tools/demo.sh            (after `make`; SDW_BUILD_DIR=build-x, or `make demo BUILD=build-x`,
#                                  picks another build folder)
# The server runs from a temporary folder and is always stopped when the script ends.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${SDW_BUILD_DIR:-${BUILD:-$root/build}}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
out_dir="$root/out"
sdw="$build/sd-worker"
say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[ -x "$sdw" ] || die "$sdw is not built (run 'make' first)"
for t in curl python3; do command -v "$t" >/dev/null || die "$t is missing (run 'make deps')"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sdw-demo.XXXXXX")
server_pid=""
cleanup() {
    local rc=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$tmp/server.log" ]; then
        echo "demo: last lines of the server log:" >&2
        tail -n 20 "$tmp/server.log" >&2
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "writing a tiny random-weight model (its pictures are noise, the pipeline is the real one)"
"$sdw" mkmodel --preset tiny --seed 1 --output "$tmp/tiny.safetensors" >/dev/null

cat >"$tmp/sd-worker.yaml" <<EOF
# The demo's configuration: port 0 lets the server pick a free port; it logs the one it took.
listen: "127.0.0.1:0"
node_id: "demo"
model:
  path: "$tmp/tiny.safetensors"
devices:
  - { kind: cpu }
log: { level: info }
EOF
"$sdw" check-config --config "$tmp/sd-worker.yaml" >/dev/null

say "starting $sdw serve"
"$sdw" serve --config "$tmp/sd-worker.yaml" 2>"$tmp/server.log" &
server_pid=$!

addr=""
for _ in $(seq 300); do
    addr=$(sed -n 's/.*event="\{0,1\}listening"\{0,1\} .*addr="\{0,1\}\([0-9.]*:[0-9]*\).*/\1/p' "$tmp/server.log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || die "the server exited during start-up"
    sleep 0.1
done
[ -n "$addr" ] || die "the server did not log its listening address"
url="http://$addr"
for _ in $(seq 600); do
    curl -sf -o /dev/null "$url/ready" && break
    kill -0 "$server_pid" 2>/dev/null || die "the server exited while its worker loaded the model"
    sleep 0.1
done
curl -sf -o /dev/null "$url/ready" || die "$url/ready did not turn 200 within 60 s"
say "serving on $url (GET /ready is 200)"

say "POST $url/v1/jobs"
job=$(curl -sS -f -H 'Content-Type: application/json' \
    -d '{"prompt":"a lighthouse on a cliff at dusk","steps":8,"width":128,"height":128,"seed":42}' \
    "$url/v1/jobs")
echo "  $job"
sse_url=$(printf '%s' "$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sse_url"])')

say "following the event stream: curl -N $url$sse_url"
# Shown as it arrives, with the (long) base64 image cut short; kept whole in events.txt.
curl -sS -N --max-time 300 "$url$sse_url" | tee "$tmp/events.txt" | while IFS= read -r line; do
    case "$line" in event:* | data:*) printf '  %s\n' "${line:0:110}" ;; esac
done

mkdir -p "$out_dir"
python3 - "$tmp/events.txt" "$out_dir/demo.png" <<'EOF'
import base64, json, struct, sys
event, result = None, None
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\r\n")
    if line.startswith("event:"):
        event = line[6:].strip()
    elif line.startswith("data:") and event in ("complete", "error", "cancelled"):
        result = (event, json.loads(line[5:]))
if not result or result[0] != "complete":
    sys.exit("demo: error: the job did not complete: %r" % (result,))
png = base64.b64decode(result[1]["image"])
if png[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("demo: error: the result is not a PNG")
w, h = struct.unpack(">II", png[16:24])
open(sys.argv[2], "wb").write(png)
print("demo: wrote %s (%dx%d PNG, %d bytes)" % (sys.argv[2], w, h, len(png)))
EOF
say "image: $out_dir/demo.png, served by $url$sse_url"
say "stopping the server"
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
[ "$rc" -eq 0 ] || die "the server exited with $rc on SIGTERM"
say "done"
