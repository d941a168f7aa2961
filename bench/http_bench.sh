#!/bin/sh
# http_bench.sh: the HTTP benchmark (not a test). wrk against GET /health of sd-worker and of a minimal h2o
# server (bench/h2o_hello.c) in the same run, req/s of each and their ratio; submit-to-`started` latency on an
# idle worker; 100 concurrent SSE readers on one job (all must get the terminal event; time).
#
#   bench/http_bench.sh [BUILD_DIR]      (default: build; env DURATION=10 CONNECTIONS=32 ROUNDS=3 READERS=100)
#
# Needs wrk and python3; uses the real worker with the tiny model, one CPU device pinned to CPU 0, so the
# HTTP side competes with the worker for the remaining CPU only (nothing runs jobs during the wrk rounds).
set -eu

BUILD=${1:-${BUILD:-build}}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
READERS=${READERS:-100}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)

command -v wrk >/dev/null || { echo "http_bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "http_bench: python3 is required" >&2; exit 1; }
[ -x "$BUILD/sd-worker" ] || { echo "http_bench: $BUILD/sd-worker not built" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdw-http-bench.XXXXXX")
SDW_PID=
QUIET_PID=
HELLO_PID=
cleanup() {
    set +e
    if [ -n "$QUIET_PID" ]; then
        kill -TERM "$QUIET_PID" 2>/dev/null
        wait "$QUIET_PID" 2>/dev/null
        kill -KILL -- "-$QUIET_PID" 2>/dev/null
    fi
    if [ -n "$HELLO_PID" ]; then
        kill -KILL "$HELLO_PID" 2>/dev/null
        wait "$HELLO_PID" 2>/dev/null
    fi
    if [ -n "$SDW_PID" ]; then
        kill -TERM "$SDW_PID" 2>/dev/null # a graceful stop, with no job running, is immediate
        wait "$SDW_PID" 2>/dev/null
        kill -KILL -- "-$SDW_PID" 2>/dev/null # anything left in its process group (workers)
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

HELLO=$BUILD/sdw-h2o-hello
if [ ! -x "$HELLO" ]; then
    # bench/http.cmake builds it with the project; build it here when the build dir lacks it
    HELLO=$WORK/sdw-h2o-hello
    cc -O2 -DH2O_USE_LIBUV=0 -o "$HELLO" "$SRC/bench/h2o_hello.c" $(pkg-config --cflags --libs libh2o-evloop) -lssl -lcrypto
fi

# HTTP_BENCH_MODEL (and SDW_ENGINE, which sd-worker honours) may point elsewhere; by default the tiny model is made once
MODEL=${HTTP_BENCH_MODEL:-}
if [ -z "$MODEL" ]; then
    MODEL=$BUILD/tmp/bench-tiny.safetensors
fi
if [ ! -e "$MODEL" ] && [ "$MODEL" = "$BUILD/tmp/bench-tiny.safetensors" ]; then
    mkdir -p "$BUILD/tmp"
    "$BUILD/sd-worker" mkmodel --preset tiny --output "$MODEL.part" >/dev/null
    mv "$MODEL.part" "$MODEL"
fi

cat >"$WORK/sd-worker.yaml" <<EOF
listen: "127.0.0.1:0"
node_id: bench
model: { path: "$MODEL" }
devices:
  - { kind: cpu, cpus: "0", threads: 1 }
queue: { capacity: 256, result_ttl_s: 600 }
log: { level: info }
metrics: { enabled: true }
EOF
# the same service with the access log filtered out (level warn), to show what the log line costs; it
# prints no listening line at that level, so it gets a port picked here
QUIET_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:0/127.0.0.1:$QUIET_PORT/" -e 's/level: info/level: warn/' -e 's/node_id: bench/node_id: quiet/' \
    "$WORK/sd-worker.yaml" >"$WORK/quiet.yaml"

# port from a "... event=listening addr=127.0.0.1:PORT" line
wait_port() {
    i=0
    while [ $i -lt 300 ]; do
        p=$(grep -o 'event=listening addr=[^ ]*' "$1" 2>/dev/null | head -n1 | sed 's/.*://')
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.1
        i=$((i + 1))
    done
    echo "http_bench: no listening line in $1" >&2
    return 1
}

setsid "$BUILD/sd-worker" serve --config "$WORK/sd-worker.yaml" 2>"$WORK/sd-worker.log" &
SDW_PID=$!
setsid "$BUILD/sd-worker" serve --config "$WORK/quiet.yaml" 2>"$WORK/quiet.log" &
QUIET_PID=$!
"$HELLO" 0 2>"$WORK/hello.log" &
HELLO_PID=$!
SDW_PORT=$(wait_port "$WORK/sd-worker.log")
HELLO_PORT=$(wait_port "$WORK/hello.log")

python3 - "$SDW_PORT" "$QUIET_PORT" <<'EOF'
import json, sys, time, urllib.request
for port in sys.argv[1:]:
    for _ in range(600):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%s/ready" % port) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        time.sleep(0.1)
    else:
        sys.exit("sd-worker on port %s never became ready" % port)
EOF

python3 - "$SDW_PORT" "$SDW_PID" "$HELLO_PORT" "$HELLO_PID" "$DURATION" "$CONNECTIONS" "$ROUNDS" "$QUIET_PORT" "$QUIET_PID" <<'EOF'
import statistics, subprocess, sys

sdw_port, sdw_pid, hello_port, hello_pid, duration, conns, rounds, quiet_port, quiet_pid = sys.argv[1:10]
tick = float(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True).stdout)

def cpu(pid):
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime, seconds

def run(port, pid):
    """wrk on GET /health: (req/s, server CPU microseconds per request)."""
    c0 = cpu(pid)
    out = subprocess.run(["wrk", "-t1", "-c" + conns, "-d" + duration + "s", "http://127.0.0.1:%s/health" % port],
                         capture_output=True, text=True, check=True).stdout
    c1 = cpu(pid)
    n = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
    return rps, (c1 - c0) * 1e6 / n

print("GET /health, wrk -t1 -c%s -d%ss, %s rounds each, alternating; sd-worker writes an access log line per request"
      % (conns, duration, rounds))
s_rps, h_rps, q_rps, s_cpu, h_cpu, q_cpu = [], [], [], [], [], []
for r in range(int(rounds)):
    a, ac = run(sdw_port, sdw_pid)
    b, bc = run(hello_port, hello_pid)
    q, qc = run(quiet_port, quiet_pid)
    s_rps.append(a); s_cpu.append(ac); h_rps.append(b); h_cpu.append(bc); q_rps.append(q); q_cpu.append(qc)
    print("  round %d: sd-worker %.0f req/s (%.1f us CPU/req), h2o hello %.0f req/s (%.1f us), "
          "sd-worker without access log %.0f req/s (%.1f us)" % (r + 1, a, ac, b, bc, q, qc))
med = statistics.median
ms, mh, mq = med(s_rps), med(h_rps), med(q_rps)
cs, ch, cq = med(s_cpu), med(h_cpu), med(q_cpu)
print("median req/s: sd-worker %.0f, h2o hello %.0f, ratio %.3f (aim >= 0.8); without the access log %.0f, ratio %.3f"
      % (ms, mh, ms / mh, mq, mq / mh))
print("median server CPU per request (steadier on a shared machine): sd-worker %.1f us, h2o hello %.1f us, "
      "without the access log %.1f us; hello/sd-worker %.3f, hello/no-log %.3f" % (cs, ch, cq, ch / cs, ch / cq))
EOF

python3 - "$SDW_PORT" "$READERS" <<'EOF'
import http.client, json, statistics, sys, threading, time

port, n_readers = int(sys.argv[1]), int(sys.argv[2])

def sse(conn):
    """(event, data) pairs from an open response."""
    r = conn.getresponse()
    ev, data = None, []
    while True:
        line = r.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if not line:
            if ev:
                yield ev, "\n".join(data)
            ev, data = None, []
        elif line.startswith("event:"):
            ev = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())

# submit-to-started on an idle worker: POST with Accept: text/event-stream, time to the started event
lat = []
for i in range(10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"prompt": "latency %d" % i, "steps": 1, "width": 64, "height": 64})
    t0 = time.perf_counter()
    c.request("POST", "/v1/jobs", body=body, headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    t_started = None
    last = None
    for ev, _ in sse(c):
        if ev == "started" and t_started is None:
            t_started = time.perf_counter()
        last = ev
    c.close()
    assert last == "complete", last
    lat.append((t_started - t0) * 1e3)
lat.sort()
print("submit-to-started on an idle worker (10 jobs): median %.2f ms, min %.2f ms, max %.2f ms"
      % (statistics.median(lat), lat[0], lat[-1]))

# many readers on one job
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
c.request("POST", "/v1/jobs", body=json.dumps({"prompt": "watched", "steps": 40, "width": 128, "height": 128}),
          headers={"Content-Type": "application/json"})
job = json.loads(c.getresponse().read())
c.close()
results = [None] * n_readers
first = [None] * n_readers
t_submit = time.perf_counter()

def reader(i):
    cc = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    cc.request("GET", job["sse_url"])
    for ev, data in sse(cc):
        if first[i] is None:
            first[i] = time.perf_counter()
        if ev in ("complete", "error", "cancelled"):
            results[i] = (ev, time.perf_counter(), len(data))
    cc.close()

threads = [threading.Thread(target=reader, args=(i,)) for i in range(n_readers)]
for t in threads:
    t.start()
for t in threads:
    t.join(300)
ok = [r for r in results if r and r[0] == "complete"]
ends = sorted(r[1] for r in ok)
sizes = set(r[2] for r in ok)
print("%d concurrent readers on one job (40 steps, 128x128): %d got 'complete' (payload %s bytes); "
      "all attached %.0f ms after submit; job end to last reader %.1f ms after the first; total %.2f s"
      % (n_readers, len(ok), "/".join(str(s) for s in sizes), (max(f for f in first if f) - t_submit) * 1e3,
         (ends[-1] - ends[0]) * 1e3 if ends else -1, (ends[-1] - t_submit) if ends else -1))
if len(ok) != n_readers:
    sys.exit("only %d of %d readers got the terminal event" % (len(ok), n_readers))
EOF
