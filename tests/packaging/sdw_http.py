#!/usr/bin/env python3
# sdw_http.py: a python3-stdlib client of the sd-worker HTTP API for the packaging and fleet tests:
# submit a job, follow its server-sent events, decode and check the PNG. Also a CLI (`generate`).
"""Client helpers: request(), wait_ready(), submit(), sse_events(), run_job(), png_decode().

CLI: sdw_http.py free-port
     sdw_http.py generate URL [--width W] [--height H] [--steps N] [--seed S] [--prompt P]
     [--stream-in-post] [--out FILE]  -> exits 0 when one job completes with a valid PNG of that size.
"""
import argparse
import base64
import http.client
import json
import socket
import struct
import sys
import time
import urllib.parse
import zlib


class Fail(Exception):
    """A check failed; the message says what was expected and what came."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conn(base, timeout):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)


def request(base, method, path, body=None, headers=None, timeout=30):
    """One request; returns (status, headers dict with lower-case names, body bytes)."""
    c = _conn(base, timeout)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else body
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def http_json(base, method, path, body=None, headers=None, timeout=30):
    """Like request(); the body parsed as JSON (None if it is not JSON)."""
    st, hd, raw = request(base, method, path, body, headers, timeout)
    try:
        return st, hd, json.loads(raw.decode() or "null")
    except ValueError:
        return st, hd, None


def wait_ready(base, timeout=120, alive=None):
    """Polls GET /ready until 200. alive() (optional) is asked between polls and must stay true."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise Fail("server exited while waiting for /ready (last: %s)" % last)
        try:
            st, _, body = request(base, "GET", "/ready", timeout=5)
            if st == 200:
                return json.loads(body)
            last = "%d %s" % (st, body[:200])
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(0.1)
    raise Fail("GET /ready not 200 after %ds (last: %s)" % (timeout, last))


def submit(base, params, timeout=30):
    """POST /v1/jobs; returns the 202 answer's JSON (job_id, sse_url, ...)."""
    st, _, js = http_json(base, "POST", "/v1/jobs", params, timeout=timeout)
    if st != 202 or not isinstance(js, dict) or "job_id" not in js:
        raise Fail("POST /v1/jobs: expected 202 with job_id, got %d %r" % (st, js))
    return js


def sse_events(resp, on_event=None):
    """Parses a text/event-stream response into (event, data-as-JSON-or-str) tuples until it closes.
    on_event(name, data) is called as each event arrives; comments (": keepalive") are skipped."""
    events = []
    name, data = "message", []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    val = json.loads(text)
                except ValueError:
                    val = text
                events.append((name, val))
                if on_event is not None:
                    on_event(name, val)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line.startswith("data: ") else line[5:])
    return events


def open_stream(base, method, path, body=None, timeout=300):
    """Starts a request whose answer is an event stream; returns (connection, response)."""
    c = _conn(base, timeout)
    h = {"Accept": "text/event-stream"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    ctype = r.getheader("Content-Type", "")
    if r.status != 200 or not ctype.startswith("text/event-stream"):
        raw = r.read()
        c.close()
        raise Fail("%s %s: expected 200 text/event-stream, got %d %s %r" % (method, path, r.status, ctype, raw[:300]))
    return c, r


def terminal(events):
    """The stream's one terminal event (complete|error|cancelled) as (name, data); Fail if not exactly one."""
    ends = [e for e in events if e[0] in ("complete", "error", "cancelled")]
    if len(ends) != 1:
        raise Fail("expected exactly one terminal event, got %r" % [e[0] for e in events])
    if events[-1] is not ends[0]:
        raise Fail("terminal event is not the last one: %r" % [e[0] for e in events])
    return ends[0]


def run_job(base, params, stream_in_post=False, timeout=300):
    """Runs one job to its end. stream_in_post: POST with Accept: text/event-stream (one request);
    else POST then GET the sse_url. Returns (job_id, events, png bytes or None)."""
    if stream_in_post:
        c, r = open_stream(base, "POST", "/v1/jobs", params, timeout)
        try:
            events = sse_events(r)
        finally:
            c.close()
        first = events[0] if events else None
        if not first or first[0] != "queued" or not isinstance(first[1], dict) or "job_id" not in first[1]:
            raise Fail("first event of a streamed POST must be 'queued' with job_id, got %r" % (first,))
        job_id = first[1]["job_id"]
    else:
        js = submit(base, params, timeout)
        job_id = js["job_id"]
        c, r = open_stream(base, "GET", js["sse_url"], None, timeout)
        try:
            events = sse_events(r)
        finally:
            c.close()
    name, data = terminal(events)
    png = base64.b64decode(data["image"]) if name == "complete" else None
    return job_id, events, png


def png_decode(png):
    """Checks a PNG fully (signature, chunk CRCs, IHDR, inflated IDAT size); returns (width, height)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise Fail("not a PNG (signature %r)" % png[:8])
    pos, ihdr, idat, seen_end = 8, None, b"", False
    while pos + 8 <= len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + n]
        crc = png[pos + 8 + n:pos + 12 + n]
        if len(body) != n or len(crc) != 4:
            raise Fail("PNG chunk %r truncated" % kind)
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise Fail("PNG chunk %r: bad CRC" % kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
            break
        pos += 12 + n
    if ihdr is None or not seen_end:
        raise Fail("PNG without IHDR or IEND")
    w, h, depth, color, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if channels is None or depth != 8 or interlace != 0:
        raise Fail("unexpected PNG format: depth %d color %d interlace %d" % (depth, color, interlace))
    raw = zlib.decompress(idat)
    if len(raw) != h * (1 + w * channels):
        raise Fail("PNG pixel data is %d bytes, expected %d for %dx%d" % (len(raw), h * (1 + w * channels), w, h))
    return w, h


def main(argv):
    ap = argparse.ArgumentParser(description="sd-worker API client for tests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="run one job and check its PNG")
    g.add_argument("url")
    g.add_argument("--prompt", default="a red cube on a table")
    g.add_argument("--width", type=int, default=64)
    g.add_argument("--height", type=int, default=64)
    g.add_argument("--steps", type=int, default=4)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--stream-in-post", action="store_true")
    g.add_argument("--out")
    sub.add_parser("free-port", help="print a TCP port free on 127.0.0.1")
    a = ap.parse_args(argv)
    if a.cmd == "free-port":
        print(free_port())
        return 0
    params = {"prompt": a.prompt, "width": a.width, "height": a.height, "steps": a.steps, "seed": a.seed}
    try:
        wait_ready(a.url, timeout=60)
        job_id, events, png = run_job(a.url, params, a.stream_in_post)
        name, data = terminal(events)
        if png is None:
            raise Fail("job %s ended with %s: %r" % (job_id, name, data))
        w, h = png_decode(png)
        if (w, h) != (a.width, a.height):
            raise Fail("PNG is %dx%d, asked for %dx%d" % (w, h, a.width, a.height))
        steps = sum(1 for e in events if e[0] == "progress")
        if a.out:
            with open(a.out, "wb") as f:
                f.write(png)
        print("job %s complete: %dx%d PNG, %d bytes, %d progress events%s"
              % (job_id, w, h, len(png), steps, (", written to " + a.out) if a.out else ""))
        return 0
    except (Fail, OSError, http.client.HTTPException, KeyError, ValueError) as e:
        print("sdw_http: FAIL: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
