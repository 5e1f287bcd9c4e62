"""A TCP relay from a listener inside a namespace to an address outside it.

Simulated hosts (:mod:`netmeta.drivers.simhosts`) reach the API the way
real controllers reach theirs: at an address on the management network —
here the underlay's own address. The API server itself keeps listening on
the real host's loopback (where tests, the ``openstack`` CLI and the demo
talk to it), and this relay joins the two: its listening socket is created
by a thread that has entered the underlay namespace (a socket keeps the
namespace it was made in), while each upstream connection is made from the
relay's own namespace. Bytes are copied both ways unchanged, so the server
sees plain HTTP (from 127.0.0.1) and long-poll watches stay open.

Run as its own process, tracked by pid::

    python -m netmeta.drivers.relay NAMESPACE LISTEN_HOST:PORT TARGET_HOST:PORT [...]

(the three arguments repeat for each forward); it prints ``ready`` once
every listener is open and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from netmeta.drivers.netns import call_in_namespace


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def listen_in(namespace: str, address: str) -> socket.socket:
    """A listening TCP socket inside ``namespace``."""
    host, port = _split(address)

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        return sock

    return call_in_namespace(namespace, make)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


async def _serve(listener: socket.socket, target: tuple[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    return await asyncio.start_server(handle, sock=listener)


async def main(forwards: list[tuple[str, str, str]]) -> None:
    servers = [await _serve(listen_in(ns, listen), _split(target)) for ns, listen, target in forwards]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main([(args[i], args[i + 1], args[i + 2]) for i in range(0, len(args), 3)]))
