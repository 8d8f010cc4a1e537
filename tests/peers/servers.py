#!/usr/bin/env python3
"""Real servers for the inline bridge tests, run inside the server namespace.

HTTP (port 80) and HTTPS (port 443, certificate given on the command line)
with Python's http.server, and a small DNS responder on UDP 53 that answers
every A query with this host's address. No name lookups: http.server's
server_bind() calls socket.getfqdn(), which would query the host's resolver,
so it is overridden. Prints "ready" once every socket is bound; runs until
killed (the test kills it by PID).

Paths: GET /big returns BIG_BYTES of data; anything else a short page.
"""
import http.server
import socket
import socketserver
import ssl
import struct
import sys
import threading

BIG_BYTES = 10 * 1024 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body_len = BIG_BYTES if self.path == "/big" else 3
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(body_len))
        self.end_headers()
        if self.path == "/big":
            chunk = b"x" * 65536
            left = body_len
            while left > 0:
                n = min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left -= n
        else:
            self.wfile.write(b"ok\n")

    def address_string(self):
        return self.client_address[0]  # no reverse lookup

    def log_message(self, fmt, *args):
        sys.stderr.write("http: " + (fmt % args) + "\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # skips getfqdn()
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


def dns_answer(query: bytes, addr: bytes) -> bytes:
    """Answers the first question with one A record (TTL 60)."""
    (qid,) = struct.unpack("!H", query[:2])
    pos = 12
    while query[pos] != 0:
        pos += 1 + query[pos]
    question = query[12 : pos + 5]
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + addr
    return header + question + answer


def serve_dns(sock: socket.socket, addr: bytes):
    while True:
        data, peer = sock.recvfrom(2048)
        try:
            sock.sendto(dns_answer(data, addr), peer)
            sys.stderr.write(f"dns: answered {peer[0]}:{peer[1]}\n")
        except (IndexError, struct.error):
            sys.stderr.write("dns: malformed query ignored\n")


def main():
    address, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
    http_server = Server((address, 80), Handler)
    https_server = Server((address, 443), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    https_server.socket = context.wrap_socket(https_server.socket, server_side=True)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((address, 53))
    for target, args in [
        (http_server.serve_forever, ()),
        (https_server.serve_forever, ()),
        (serve_dns, (dns, socket.inet_aton(address))),
    ]:
        threading.Thread(target=target, args=args, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
