#!/usr/bin/env python3
"""Load-balancer test client, run inside the client namespace. Prints one
JSON document on stdout. Every loop is bounded in count and time.

  lb_client.py count ADDR PORT N     N new TCP connections, one GET each
                                     (Host: ADDR, or $LB_HOST if set):
                                     {"counts": {backend: n}, "errors": e}
  lb_client.py count ADDR PORT N SPORT
                                     the same from source ports SPORT..SPORT+N,
                                     each closed with a reset (no TIME_WAIT), so
                                     a later run can use the same ports again
  lb_client.py udp ADDR PORT N       N datagrams, each from a new socket
                                     (new source port): same document
  lb_client.py hold ADDR PORT N GO   N keep-alive connections, one GET each;
                                     prints "held" on stderr, waits (at most
                                     60 s) for the file GO, then a second GET
                                     on each: {"same": s, "moved": m,
                                     "errors": e, "before": {...}}
  lb_client.py steady ADDR PORT N S [P]
                                     N keep-alive connections (prints "connected"
                                     on stderr once open), each a GET every P s
                                     (default 0.5) for S seconds: {"same": s, "moved": m,
                                     "errors": e, "max_stall_s": x, "stall_end":
                                     epoch s, "stalled_over_1s": k, "before": {...}}
"""
import json
import os
import socket
import struct
import sys
import time

TIMEOUT = 3.0
# steady: the pause between two requests on one connection
STEADY_EVERY = 0.5
# Give up after this many failures in a row, or this long in all: a broken
# balancer must fail the test quickly, not after N timeouts.
MAX_FAILURES_IN_A_ROW = 5
DEADLINE_S = 120


def bounded(n, once):
    """Calls once(i) for i in range(n); returns (results, errors). After
    MAX_FAILURES_IN_A_ROW failures in a row, or DEADLINE_S in all, the calls
    left are not made and count as errors."""
    deadline = time.monotonic() + DEADLINE_S
    results, errors, in_a_row = [], 0, 0
    for i in range(n):
        if in_a_row >= MAX_FAILURES_IN_A_ROW or time.monotonic() > deadline:
            errors += 1
            continue
        try:
            results.append(once(i))
            in_a_row = 0
        except OSError as e:
            errors += 1
            in_a_row += 1
            print(f"error: {e}", file=sys.stderr)
    return results, errors


def tally(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def get(sock, host):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the headers")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return body[:length].decode()


def connect(addr, port, sport=None):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    if sport is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # close with a reset: the port leaves no TIME_WAIT behind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.bind(("::" if family(addr) == socket.AF_INET6 else "0.0.0.0", sport))
    s.connect((addr, port))
    return s


def count(addr, port, n, sport=None):
    def once(i):
        with connect(addr, port, None if sport is None else sport + i) as s:
            # an IPv6 literal goes in brackets (RFC 3986 §3.2.2)
            host = f"[{addr}]" if ":" in addr else addr
            return get(s, os.environ.get("LB_HOST", host))

    names, errors = bounded(n, once)
    return {"counts": tally(names), "errors": errors}


def udp(addr, port, n):
    def once(i):
        with socket.socket(family(addr), socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.connect((addr, port))  # replies must come from the VIP
            s.send(b"query %d" % i)
            return s.recv(2048).decode()

    names, errors = bounded(n, once)
    return {"counts": tally(names), "errors": errors}


def hold(addr, port, n, go):
    def once(_):
        s = connect(addr, port)
        return (s, get(s, addr))

    conns, errors = bounded(n, once)
    before = tally(name for _, name in conns)
    print("held", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    same = moved = 0
    for s, name in conns:
        try:
            if get(s, addr) == name:
                same += 1
            else:
                moved += 1
        except OSError as e:
            errors += 1
            print(f"error: {e}", file=sys.stderr)
        s.close()
    return {"same": same, "moved": moved, "errors": errors, "before": before}


def steady(addr, port, n, seconds, every=None):
    """n keep-alive connections, each making a GET every `every` s (default
    STEADY_EVERY) for
    `seconds` (one thread each). Reports, per connection, whether every
    answer came from the backend of its first, and the longest time
    between two answers beyond the pause (a stall: the connection's
    packets lost while its route changed, until TCP retransmitted them)."""
    import threading

    every = STEADY_EVERY if every is None else every

    def once(_):
        s = connect(addr, port)
        return (s, get(s, addr))

    conns, errors = bounded(n, once)
    print("connected", file=sys.stderr, flush=True)
    deadline = time.monotonic() + min(seconds, DEADLINE_S)
    lock = threading.Lock()
    out = {"same": 0, "moved": 0, "errors": errors, "max_stall_s": 0.0,
           "stall_end": 0.0, "stalled_over_1s": 0, "before": tally(n for _, n in conns)}

    def run(sock, name):
        sock.settimeout(15.0)
        last, worst, worst_end, moved, failed = time.time(), 0.0, 0.0, False, False
        while time.monotonic() < deadline:
            try:
                got = get(sock, addr)
            except OSError as e:
                print(f"error: {e}", file=sys.stderr)
                failed = True
                break
            now = time.time()
            moved |= got != name
            stall = now - last - every
            if stall > worst:
                worst, worst_end = stall, now
            last = now
            time.sleep(every)
        sock.close()
        with lock:
            out["errors"] += int(failed)
            out["moved" if moved else "same"] += int(not failed)
            out["stalled_over_1s"] += int(worst > 1.0)
            if worst > out["max_stall_s"]:
                out["max_stall_s"], out["stall_end"] = worst, worst_end

    threads = [threading.Thread(target=run, args=c) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main():
    cmd, addr, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if cmd == "count":
        out = count(addr, port, n, int(sys.argv[5]) if len(sys.argv) > 5 else None)
    elif cmd == "udp":
        out = udp(addr, port, n)
    elif cmd == "steady":
        every = float(sys.argv[6]) if len(sys.argv) > 6 else None
        out = steady(addr, port, n, float(sys.argv[5]), every)
    elif cmd == "hold":
        out = hold(addr, port, n, sys.argv[5])
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
