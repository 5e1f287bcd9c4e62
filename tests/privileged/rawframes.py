"""Hand-made frames a hostile guest sends, and a sniffer its victim runs.

Run inside a guest's namespace as ``python rawframes.py <command> …``:

* ``garp IFACE IP MAC`` — one gratuitous ARP reply "IP is at MAC", broadcast;
* ``dhcp-offer IFACE SRC_MAC SRC_IP DST_MAC DST_IP`` — a UDP 67→68 datagram
  shaped like a DHCP server's reply (BOOTP op 2), with a correct IPv4 header
  checksum (br_netfilter drops malformed IPv4 before any rule sees it);
* ``sniff-dhcp IFACE SRC_MAC SECONDS`` — print ``seen`` and exit 0 when a
  UDP-from-67 frame from SRC_MAC arrives within SECONDS, else exit 1.

Standard library only: an AF_PACKET socket is all these need.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _send(iface: str, frame: bytes, count: int = 3) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.05)


def garp(iface: str, ip: str, mac: str) -> None:
    src = _mac(mac)
    addr = socket.inet_aton(ip)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, src, addr, b"\xff" * 6, addr)
    _send(iface, b"\xff" * 6 + src + struct.pack("!H", 0x0806) + arp)


def dhcp_offer(iface: str, src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> None:
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s", 2, 1, 6, 0, 0x1234, 0, 0, b"\0" * 4, socket.inet_aton(dst_ip),
                        socket.inet_aton(src_ip), b"\0" * 4, _mac(dst_mac) + b"\0" * 10)
    bootp += b"\0" * 192 + b"\x63\x82\x53\x63" + b"\x35\x01\x02" + b"\xff"  # magic, DHCPOFFER, end
    udp = struct.pack("!HHHH", 67, 68, 8 + len(bootp), 0) + bootp
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src_ip),
                         socket.inet_aton(dst_ip))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    _send(iface, _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", 0x0800) + header + udp)


def sniff_dhcp(iface: str, src_mac: str, seconds: float) -> int:
    want = _mac(src_mac)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)) as sock:
        sock.bind((iface, 0))
        sock.settimeout(0.2)
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame = sock.recv(2048)
            except socket.timeout:
                continue
            if frame[6:12] == want and frame[23] == 17 and frame[34:36] == b"\x00\x43":
                print("seen", flush=True)
                return 0
    return 1


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "garp":
        garp(*args)
    elif command == "dhcp-offer":
        dhcp_offer(*args)
    elif command == "sniff-dhcp":
        return sniff_dhcp(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
