#!/usr/bin/env python3
"""A load-balancer backend for the tests, run inside a backend namespace.

  lb_backend.py NAME [--udp-bind ADDR ...] [--load FILE] [--log]

- HTTP/1.1 on port 80 (IPv4 and IPv6): every GET answers NAME, except
  GET /load on port 9100, which answers the number in FILE (default 0.0):
  the load figure the balancer's [load] source reads; and GET /big, which
  answers BIG_BYTES of zeros (throughput runs).
- UDP on port 5353, bound to each --udp-bind address: every datagram is
  answered with NAME. In direct-server-return mode the replies must come from
  the VIP, so the test binds the VIP (it is on lo); a socket bound to the
  wildcard would answer from the interface address.

With --log, every HTTP request is printed as "request HOST PATH".

No name lookups (http.server's server_bind() would call getfqdn()). Prints
"ready" once every socket is bound; runs until killed by PID.
"""
import argparse
import http.server
import socket
import socketserver
import sys
import threading

args = None
BIG_BYTES = 50 * 1024 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(BIG_BYTES))
            self.end_headers()
            chunk = bytes(256 * 1024)
            left = BIG_BYTES
            while left > 0:
                n = min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left -= n
            return
        if self.path == "/load":
            try:
                with open(args.load) as f:
                    body = f.read().strip().encode()
            except OSError:
                body = b"0.0"
        else:
            body = args.name.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return self.client_address[0]  # no reverse lookup

    def log_message(self, fmt, *a):
        pass

    def log_request(self, code="-", size="-"):
        # --log: one line per request received, with its Host (what the
        # inspect-then-balance test reads: blocked requests never get here)
        if args.log:
            print(f"request {self.headers.get('Host', '-')} {self.path}", flush=True)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET6

    def server_bind(self):
        # dual stack: IPv4 clients arrive as ::ffff:a.b.c.d
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)  # skips getfqdn()
        self.server_name = "backend"
        self.server_port = self.server_address[1]


def udp_responder(addr):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 5353))

    def serve():
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(args.name.encode(), peer)

    threading.Thread(target=serve, daemon=True).start()


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--udp-bind", action="append", default=[])
    p.add_argument("--load", default="/nonexistent")
    p.add_argument("--log", action="store_true", help="print a line per HTTP request")
    args = p.parse_args()
    servers = [Server(("::", 80), Handler), Server(("::", 9100), Handler)]
    for addr in args.udp_bind:
        udp_responder(addr)
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
