#!/usr/bin/env python3
"""Sends one DNS A query and prints the answer address, or "timeout".

usage: dns_query.py SERVER NAME SOURCE_PORT TIMEOUT_SECONDS
The source port is fixed so a test can send the same flow again.
"""
import socket
import struct
import sys

server, name, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("0.0.0.0", sport))
sock.settimeout(timeout)
sock.sendto(query, (server, 53))
try:
    data, _ = sock.recvfrom(2048)
    print(socket.inet_ntoa(data[-4:]))
except socket.timeout:
    print("timeout")
