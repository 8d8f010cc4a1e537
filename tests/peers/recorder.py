#!/usr/bin/env python3
"""A TCP server that records what each connection actually received, for
the evasion tests: the kernel's reading of the stream (overlaps resolved,
the urgent byte left out, segments with bad checksums discarded), which is
what any real server behind the bridge would act on.

Usage: recorder.py ADDRESS LOG PORT...

Listens on every PORT of ADDRESS. Each accepted connection appends one JSON
line to LOG: {"event": "accept", "port": listening port, "sport": client
port}; it is then read until the client closes it or it is idle for IDLE
seconds, and another is appended: {"event": "close", "port", "sport",
"data": the bytes as latin-1 text}. On port 80 every complete request head (up to an empty line)
is answered with a short HTTP/1.1 response, so keep-alive clients go on.
Prints "ready" once every socket listens; runs until killed (the test kills
it by PID). No name lookups.
"""
import json
import socket
import sys
import threading

IDLE = 1.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

lock = threading.Lock()


def log(log_path, record):
    with lock, open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def serve(conn, port, peer_port, log_path):
    log(log_path, {"event": "accept", "port": port, "sport": peer_port})
    data = b""
    answered = 0
    conn.settimeout(IDLE)
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if port == 80:
                heads = data.count(b"\r\n\r\n")
                while answered < heads:
                    conn.sendall(RESPONSE)
                    answered += 1
    except OSError:
        pass
    finally:
        conn.close()
    log(
        log_path,
        {"event": "close", "port": port, "sport": peer_port, "data": data.decode("latin-1")},
    )


def listen(address, port, log_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(128)

    def accept():
        while True:
            conn, peer = s.accept()
            threading.Thread(
                target=serve, args=(conn, port, peer[1], log_path), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()


def main():
    address, log_path = sys.argv[1], sys.argv[2]
    for port in sys.argv[3:]:
        listen(address, int(port), log_path)
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
