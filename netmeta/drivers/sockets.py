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
IPV6_FREEBIND = 78


def listening_socket_in_namespace(
    ns: str, host: str, port: int, *, freebind: bool = True, backlog: int = 1024, reuseport: bool = False,
    device: str = "",
) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` inside ``ns``.

    An IPv6 ``host`` gives an IPv6 socket: ``"::"`` is dual-stack (IPv4
    peers appear as ``::ffff:a.b.c.d``; where the kernel has no IPv6 it falls
    back to ``0.0.0.0``), and a link-local one (``fe80::a9fe:a9fe``) is bound
    to ``device``'s scope, looked up inside ``ns``. The caller owns the socket
    (close it when the namespace goes away; its inode can be compared with
    :func:`netmeta.drivers.netns.namespace_inode`).
    """

    def make() -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        bind_to: tuple[str, int] | tuple[str, int, int, int] = (host, port)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if host != "::":
                raise
            family, bind_to, sock = socket.AF_INET, ("0.0.0.0", port), socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:  # one socket per worker process, the kernel spreads connections
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
                if freebind:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                if device:
                    bind_to = (host, port, 0, socket.if_nametoindex(device))
            elif freebind:
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind(bind_to)
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
