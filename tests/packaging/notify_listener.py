#!/usr/bin/env python3
# notify_listener.py: stands in for systemd's notification socket in tests where systemd is not PID 1:
# binds an AF_UNIX datagram socket and appends each sd_notify message to a log file, one per line.
"""usage: notify_listener.py SOCKET LOGFILE [--mode 0666] [--timeout SECONDS]

Each datagram is written as one line (its newlines shown as '|'), flushed at once, so a shell can
wait for READY=1 with grep. Exits on SIGTERM/SIGINT or after --timeout seconds, removing SOCKET."""
import argparse
import os
import signal
import socket
import sys
import time


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("logfile")
    ap.add_argument("--mode", default="0666", help="permissions of the socket file (the service user must write it)")
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args(argv)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if os.path.exists(a.socket):
        os.unlink(a.socket)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a.socket)
    os.chmod(a.socket, int(a.mode, 8))
    s.settimeout(0.2)
    deadline = time.monotonic() + a.timeout
    try:
        with open(a.logfile, "a", buffering=1) as log:
            while not stop and time.monotonic() < deadline:
                try:
                    msg = s.recv(65536)
                except socket.timeout:
                    continue
                except InterruptedError:
                    continue
                log.write(msg.decode("utf-8", "replace").strip("\n").replace("\n", "|") + "\n")
    finally:
        s.close()
        try:
            os.unlink(a.socket)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
