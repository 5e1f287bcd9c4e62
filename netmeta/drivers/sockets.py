"""Listening sockets that live inside a namespace.

The metadata process holds one listening socket in every qdhcp/qrouter
namespace, all served by one event loop: a socket belongs to the namespace
of the thread that created it, for its whole life, whatever namespace later
accepts on it. So the socket is made in a short-lived thread that has
setns(2)-ed into the namespace (:func:`netmeta.drivers.netns.call_in_namespace`)
and then handed back; the process itself never changes namespace.

``IP_FREEBIND`` lets the qdhcp listener bind ``169.254.169.254`` before the
agent has put that address on the tap (the two processes start in any
order); without it bind(2) fails with EADDRNOTAVAIL.
"""

from __future__ import annotations

import socket

from netmeta.drivers.errors import translate
from netmeta.drivers.netns import call_in_namespace

# Not exported by Python's socket module on every build.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def listening_socket_in_namespace(
    ns: str, host: str, port: int, *, freebind: bool = True, backlog: int = 1024, reuseport: bool = False
) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` inside ``ns``.

    The caller owns the socket (close it when the namespace goes away; its
    inode can be compared with :func:`netmeta.drivers.netns.namespace_inode`).
    """

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:  # one socket per worker process, the kernel spreads connections
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if freebind:
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        return call_in_namespace(ns, make)
    except OSError as exc:
        raise translate(exc, f"listen on {host}:{port} in {ns}") from exc
