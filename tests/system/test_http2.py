"""test_http2.py: cleartext HTTP/2 against libh2o 2.2.5, which lacks the rapid-reset fix (CVE-2023-44487).
By default (server.http2: false) the h2c preface gets 400 and Upgrade: h2c is ignored; with http2: true a
client sending HEADERS+RST_STREAM pairs on one connection gets GOAWAY (ENHANCE_YOUR_CALM) after 1000
streams, the streams past it are not run, and the service keeps answering. Frames are built by hand."""
import socket
import struct
import time

import sdw
from sdw import Service, expect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x1, 0x3, 0x4, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def header_block(path, authority):
    # :method GET (static 2), :scheme http (static 6), then :path and :authority as literals without
    # indexing (names from static 4 and 1), so the block never touches the dynamic table
    return (b"\x82\x86" + b"\x04" + bytes([len(path)]) + path.encode() + b"\x01" + bytes([len(authority)]) +
            authority.encode())


def read_frames(sock, until, timeout):
    """Reads frames until until(kind, flags, stream, payload) is true; returns the frames read."""
    buf, frames = b"", []
    deadline = time.time() + timeout
    sock.settimeout(0.5)
    while time.time() < deadline:
        while len(buf) >= 9:
            n = struct.unpack(">I", b"\0" + buf[:3])[0]
            if len(buf) < 9 + n:
                break
            kind, flags, stream = struct.unpack(">BBI", buf[3:9])
            f = (kind, flags, stream & 0x7FFFFFFF, buf[9:9 + n])
            buf = buf[9 + n:]
            frames.append(f)
            if until(*f):
                return frames
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        buf += data
    return frames


def test_h2c_off_by_default():
    with Service("h2off") as svc:
        svc.wait_ready()
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        try:
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            data = s.recv(4096)
        finally:
            s.close()
        expect(data.startswith(b"HTTP/1.1 400"), "h2c preface answered %r" % data[:64], svc)
        st, h, _ = svc.request("GET", "/health", headers={"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                                          "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
        expect(st == 200, "Upgrade: h2c got %s %r" % (st, h), svc)


def test_rapid_reset_gets_goaway():
    pairs = 3000
    with Service("h2on", extra={"server": {"http2": True}}) as svc:
        svc.wait_ready()
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        try:
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            got = read_frames(s, lambda k, f, st, p: k == SETTINGS and not f & ACK, 5)
            expect(any(k == SETTINGS for k, _, _, _ in got), "no SETTINGS from the server: %r" % got[:4], svc)
            block = header_block("/health", "127.0.0.1")
            out = bytearray(frame(SETTINGS, ACK, 0))
            for i in range(pairs):
                sid = 1 + 2 * i
                out += frame(HEADERS, END_STREAM | END_HEADERS, sid, block)
                out += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))  # CANCEL
            try:
                s.sendall(bytes(out))
            except (BrokenPipeError, ConnectionResetError):
                pass
            frames = read_frames(s, lambda k, f, st, p: k == GOAWAY, 20)
        finally:
            s.close()
        goaways = [p for k, _, _, p in frames if k == GOAWAY]
        expect(goaways, "no GOAWAY after %d HEADERS+RST_STREAM pairs (%d frames back)" % (pairs, len(frames)), svc)
        last, code = struct.unpack(">II", goaways[0][:8])
        sdw.log("GOAWAY last_stream_id=%d error=%d after %d pairs" % (last, code, pairs))
        expect(code == 11, "GOAWAY error code %d, not ENHANCE_YOUR_CALM" % code, svc)
        expect(last < 2 * 1100, "GOAWAY only at stream %d" % last, svc)
        deadline = time.time() + 5  # stderr is read by a thread
        while not svc.log_has("event=http2_goaway") and time.time() < deadline:
            time.sleep(0.05)
        expect(svc.log_has("event=http2_goaway"), "no http2_goaway log line", svc)
        st, _, _ = svc.request("GET", "/health", timeout=10)
        expect(st == 200, "/health after the attack: %s" % st, svc)


if __name__ == "__main__":
    sdw.main([test_h2c_off_by_default, test_rapid_reset_gets_goaway])
