"""test_http_framing.py: request smuggling (RFC 9112 6.3) over raw loopback sockets: a request with both
Content-Length and Transfer-Encoding, two different Content-Lengths, more than one Transfer-Encoding or an
obs-folded one gets 400 ambiguous_framing and its connection closes; identical Content-Lengths and chunked
alone are served and keep the connection. A request hidden behind an ambiguous one never runs: it would
submit a job, and sdw_jobs_submitted_total does not move."""
import json
import re
import socket

import sdw
from sdw import Service, expect

JOB = json.dumps({"prompt": "smuggled", "steps": 1, "width": 64, "height": 64}).encode()


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def post(headers, body=b"", path=b"/v1/jobs"):
    head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


class Raw:
    """One raw connection: sends bytes, reads responses one at a time (by their Content-Length)."""

    def __init__(self, svc):
        self.s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def response(self):
        """(status, lower-case headers, body) of the next response; None if the peer closed first."""
        try:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            h = {}
            for line in lines[1:]:
                k, v = line.split(":", 1)
                h[k.strip().lower()] = v.strip()
            n = int(h.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, h, body
        except EOFError:
            return None

    def closed(self, wait=5):
        """True once the peer has closed (EOF or reset) with nothing more sent; False if it stays open."""
        self.s.settimeout(wait)
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return not self.buf
        return data == b"" and not self.buf

    def close(self):
        self.s.close()


def submitted(svc):
    st, _, text = svc.request("GET", "/metrics")
    m = re.search(rb"^sdw_jobs_submitted_total (\d+)", text, re.M)
    expect(st == 200 and m, "metrics %s %r" % (st, text[:300]), svc)
    return int(m.group(1))


def expect_refused(svc, data, field, what):
    """data gets one 400 ambiguous_framing naming field, Connection: close, and the connection closes; with
    field None the 400 is h2o's own plain-text one (picohttpparser refused the head)."""
    before = submitted(svc)
    c = Raw(svc)
    try:
        c.send(data)
        r = c.response()
        expect(r is not None, "%s: closed without an answer" % what, svc)
        st, h, body = r
        expect(st == 400 and h.get("connection") == "close", "%s: %s %r %r" % (what, st, h, body), svc)
        if field is not None:
            expect(h["content-type"].startswith("application/json"), "%s: %r %r" % (what, h, body), svc)
            doc = json.loads(body)
            expect(doc["error"]["code"] == "ambiguous_framing" and doc["error"]["field"] == field,
                   "%s: %r" % (what, doc), svc)
        expect(c.closed(), "%s: the connection stayed open (buffered %r)" % (what, c.buf[:200]), svc)
    finally:
        c.close()
    expect(submitted(svc) == before, "%s: a job was submitted" % what, svc)


def expect_served(svc, data, what, n=1):
    """data (n requests) gets n 202s, each a new job, and the connection stays open for one more request."""
    before = submitted(svc)
    c = Raw(svc)
    try:
        c.send(data)
        for i in range(n):
            r = c.response()
            expect(r is not None and r[0] == 202, "%s: answer %d: %r" % (what, i, r), svc)
        c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        r = c.response()
        expect(r is not None and r[0] == 200, "%s: the connection did not go on: %r" % (what, r), svc)
    finally:
        c.close()
    expect(submitted(svc) == before + n, "%s: %d jobs submitted, want %d" % (what, submitted(svc) - before, n), svc)


def test_ambiguous_framing_refused():
    with Service("framing") as svc:
        svc.wait_ready()
        n = b"%d" % len(JOB)
        expect_refused(svc, post([b"Content-Length: " + n, b"Transfer-Encoding: chunked"], chunked(JOB)),
                       "Transfer-Encoding", "CL then TE")
        expect_refused(svc, post([b"Transfer-Encoding: chunked", b"Content-Length: " + n], chunked(JOB)),
                       "Transfer-Encoding", "TE then CL")
        expect_refused(svc, post([b"tRANSFER-eNCODING: chunked", b"CONTENT-length: " + n], chunked(JOB)),
                       "Transfer-Encoding", "CL+TE in odd case")
        expect_refused(svc, post([b"Content-Length: " + n, b"Content-Length: %d" % (len(JOB) + 1)], JOB + b" "),
                       "Content-Length", "two different CLs")
        expect_refused(svc, post([b"Content-Length: %d" % (len(JOB) + 1), b"Content-Length: " + n], JOB + b" "),
                       "Content-Length", "two different CLs, the longer first")
        expect_refused(svc, post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], chunked(JOB)),
                       "Transfer-Encoding", "TE twice")
        expect_refused(svc, post([b"Content-Length: " + n, b" 1"], JOB), "Content-Length", "obs-folded CL")
        expect_refused(svc, post([b"Transfer-Encoding: chunked", b"\tx"], chunked(JOB)), "Transfer-Encoding",
                       "obs-folded TE")
        expect_refused(svc, post([b"Content-Length : " + n, b"Transfer-Encoding: chunked"], chunked(JOB)),
                       None, "space before the colon")
        expect_refused(svc, post([b"Transfer-Encoding: chunked"], chunked(JOB)).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
                       "Transfer-Encoding", "TE in HTTP/1.0")
        # on a path no handler of ours serves, and on a route that takes no body
        expect_refused(svc, post([b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n", b"/nowhere"),
                       "Transfer-Encoding", "unknown path")
        expect_refused(svc, post([b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n", b"/health"),
                       "Transfer-Encoding", "health")
        # request targets outside the "/" path: asterisk-form, absolute-form
        for target in (b"*", b"http://127.0.0.1/v1/jobs"):
            expect_refused(svc, post([b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n",
                                     target), "Transfer-Encoding", "target %r" % target)


def test_smuggled_request_never_runs():
    with Service("smuggle") as svc:
        svc.wait_ready()
        hidden = post([b"Content-Length: %d" % len(JOB)], JOB)
        # CL.TE: a hop that reads Content-Length: 0 sees one empty POST; h2o reads chunked and would then
        # parse the hidden job submission as the next request on the connection
        expect_refused(svc, post([b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n" + hidden),
                       "Transfer-Encoding", "CL.TE")
        # TE.CL: a hop that reads chunked sees one POST whose chunk is the hidden request; h2o reads the
        # Content-Length of the first of two
        inner = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)
        expect_refused(svc, post([b"Content-Length: 4", b"Content-Length: %d" % len(inner)], inner),
                       "Content-Length", "CL.CL")
        # the same behind an honest request pipelined on the same connection: the first is served
        before = submitted(svc)
        c = Raw(svc)
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" +
                   post([b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n" + hidden))
            first, second = c.response(), c.response()
            expect(first and first[0] == 200 and second and second[0] == 400, "pipelined: %r %r" % (first, second),
                   svc)
            expect(c.closed(), "pipelined: the connection stayed open", svc)
        finally:
            c.close()
        expect(submitted(svc) == before, "pipelined: the hidden job was submitted", svc)


def test_unambiguous_framing_served():
    with Service("framing-ok") as svc:
        svc.wait_ready()
        n = b"%d" % len(JOB)
        expect_served(svc, post([b"Content-Length: " + n, b"Content-Length: " + n], JOB), "the same CL twice")
        expect_served(svc, post([b"Transfer-Encoding: chunked"], chunked(JOB)), "chunked alone")
        expect_served(svc, post([b"transfer-encoding: Chunked"], chunked(JOB)), "chunked in odd case")
        expect_served(svc, post([b"Content-Length: " + n, b"X-Note: a", b" folded note"], JOB), "obs-fold elsewhere")
        # two honest requests pipelined (the second parsed straight from the buffer, not from a read)
        expect_served(svc, post([b"Content-Length: " + n], JOB) + post([b"Transfer-Encoding: chunked"], chunked(JOB)),
                      "pipelined", n=2)
        # h2o still answers 400 itself for what it cannot parse
        c = Raw(svc)
        try:
            c.send(post([b"Transfer-Encoding: gzip"], JOB))
            r = c.response()
            expect(r is not None and r[0] == 400, "TE gzip: %r" % (r,), svc)
        finally:
            c.close()


if __name__ == "__main__":
    sdw.main([test_ambiguous_framing_refused, test_smuggled_request_never_runs, test_unambiguous_framing_served])
