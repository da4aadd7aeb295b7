#!/usr/bin/python3
"""Opens many idle PostgreSQL client connections and holds them.

Each connection sends a protocol 3.0 startup packet, expects trust authentication (AuthenticationOk) and reads
until ReadyForQuery. When every connection is either ready or failed, one status line is written to --status
("ok=N failed=M seconds=S first_error=..."), then the connections are held open until SIGTERM or SIGINT.

Usage: idle_conns.py HOST PORT USER DATABASE COUNT [--parallel 200] [--timeout 120] [--status FILE]
"""
import argparse
import errno
import os
import selectors
import signal
import socket
import struct
import sys
import time


def startup_packet(user, database):
    params = [("user", user), ("database", database), ("application_name", "bench-idle")]
    body = struct.pack("!I", 196608)
    for key, value in params:
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def error_text(payload):
    """The M (message) field of an ErrorResponse body."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return "%s %s" % (fields.get("C", "?"), fields.get("M", "?"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("user")
    ap.add_argument("database")
    ap.add_argument("count", type=int)
    ap.add_argument("--parallel", type=int, default=200, help="connections being set up at once")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to set everything up")
    ap.add_argument("--status", default="-", help="file for the status line (default stdout)")
    args = ap.parse_args()

    stop = {"now": False}

    def on_signal(_signo, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    packet = startup_packet(args.user, args.database)
    sel = selectors.DefaultSelector()
    ready = []          # sockets past ReadyForQuery, held open
    state = {}          # socket -> [phase, buffer]
    started = ok = failed = 0
    first_error = ""
    t0 = time.monotonic()
    deadline = t0 + args.timeout

    def fail(sock, why):
        nonlocal failed, first_error
        failed += 1
        if not first_error:
            first_error = why
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        state.pop(sock, None)
        sock.close()

    while (started < args.count or state) and time.monotonic() < deadline and not stop["now"]:
        while started < args.count and len(state) < args.parallel:
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex((args.host, args.port))
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                first_error = first_error or "connect: " + errno.errorcode.get(rc, str(rc))
                sock.close()
                continue
            state[sock] = ["connect", bytearray()]
            sel.register(sock, selectors.EVENT_WRITE)
        for key, _mask in sel.select(0.2):
            sock = key.fileobj
            phase, buf = state[sock]
            if phase == "connect":
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(sock, "connect: " + errno.errorcode.get(err, str(err)))
                    continue
                try:
                    sock.send(packet)  # 60-odd bytes always fit a fresh socket's buffer
                except OSError as e:
                    fail(sock, "send: %s" % e)
                    continue
                state[sock][0] = "login"
                sel.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(sock, "recv: %s" % e)
                continue
            if not data:
                fail(sock, "closed by the server during login")
                continue
            buf += data
            done = False
            while len(buf) >= 5:
                kind = chr(buf[0])
                length = struct.unpack("!I", bytes(buf[1:5]))[0]
                if len(buf) < 1 + length:
                    break
                payload = bytes(buf[5:1 + length])
                del buf[:1 + length]
                if kind == "E":
                    fail(sock, "ErrorResponse: " + error_text(payload))
                    done = True
                    break
                if kind == "R" and struct.unpack("!I", payload[:4])[0] != 0:
                    fail(sock, "server asked for a password (auth code %d)" % struct.unpack("!I", payload[:4])[0])
                    done = True
                    break
                if kind == "Z":
                    ok += 1
                    sel.unregister(sock)
                    state.pop(sock, None)
                    ready.append(sock)
                    done = True
                    break
            if done:
                continue

    for sock in list(state):
        fail(sock, "timed out during setup")
    failed += args.count - started
    line = "ok=%d failed=%d seconds=%.1f first_error=%s\n" % (ok, failed, time.monotonic() - t0,
                                                               first_error.replace("\n", " ") or "-")
    if args.status == "-":
        sys.stdout.write(line)
        sys.stdout.flush()
    else:
        with open(args.status + ".tmp", "w") as f:
            f.write(line)
        os.replace(args.status + ".tmp", args.status)

    while not stop["now"]:
        time.sleep(0.5)
    for sock in ready:
        sock.close()


if __name__ == "__main__":
    main()
