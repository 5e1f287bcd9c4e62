"""Requests/s of the metadata server on 127.0.0.1, measured with wrk.

Runs the real :class:`HttpProtocol` + :class:`MetadataApp` (the test world's
vm1 at 127.0.0.1) in a child process, then points wrk at two URLs — the
OpenStack ``meta_data.json`` (fresh random_seed, JSON dump every time) and a
deep EC2 leaf — once with ``imds_tokens=off`` and once with ``required``
(a Lua script fetches a token with PUT and sends it on every GET).

    .venv/bin/python bench/bench_metadata_app.py [--duration 10] [--connections 32] [--rounds 3]

Only loopback traffic; nothing is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sets the token header once in init(): wrk then pre-builds the request, as
# with -H. (A per-request request() function makes wrk itself the bottleneck
# on a 2-core host and would be measured as "token cost".)
LUA_TOKEN = """
init = function(args)
  wrk.headers["X-aws-ec2-metadata-token"] = TOKEN
end
"""

PATHS = {
    "meta_data.json": "/openstack/latest/meta_data.json",
    "ec2 deep leaf": "/latest/meta-data/public-keys/0/openssh-key",
}


def serve(tokens: str, port_queue: "multiprocessing.Queue[int]") -> None:
    from netmeta.config import Config, RateLimitConfig
    from netmeta.metadata.app import MetadataApp
    from netmeta.metadata.http import AccessLog, HttpProtocol, HttpShared, ListenerContext
    from tests.builders import NET_A, MemoryPasswords, metadata_cloud

    async def main() -> None:
        snap = metadata_cloud()
        app = MetadataApp(Config(imds_tokens=tokens, rate_limiting=RateLimitConfig(rate_limit_enabled=False)),
                          lambda: snap, MemoryPasswords())
        ctx = ListenerContext("network", NET_A)
        shared = HttpShared(access_log=AccessLog(keep=100))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: HttpProtocol(app.dispatch, ctx, shared), "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def token(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    return conn.getresponse().read().decode()


def wrk(port: int, path: str, duration: int, connections: int, tok: str | None) -> tuple[float, str]:
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    script = None
    if tok is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'TOKEN = "{tok}"\n' + LUA_TOKEN)
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    if script is not None:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"wrk saw {bad.group(1)} error responses on {path}:\n{out}")
    return rps, p50.group(1) if p50 else "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per mode; the median counts")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    # Both servers run side by side and the runs alternate (off, required,
    # off, …), so drift on this shared machine hits both alike; the client
    # sends the same token header in both modes (ignored when tokens are off),
    # so wrk does the same work and only the server's check differs.
    results: dict[tuple[str, str], tuple[float, str]] = {}
    procs: list[multiprocessing.Process] = []
    ports: dict[str, int] = {}
    try:
        for mode in ("off", "required"):
            queue: "multiprocessing.Queue[int]" = multiprocessing.Queue()
            proc = multiprocessing.Process(target=serve, args=(mode, queue), daemon=True)
            proc.start()
            procs.append(proc)
            ports[mode] = queue.get(timeout=10)
        tok = token(ports["required"])
        for name, path in PATHS.items():
            runs: dict[str, list[tuple[float, str]]] = {"off": [], "required": []}
            for mode in ("off", "required"):
                wrk(ports[mode], path, 2, opts.connections, tok)  # warm-up
            for _ in range(opts.rounds):
                for mode in ("off", "required"):
                    runs[mode].append(wrk(ports[mode], path, opts.duration, opts.connections, tok))
            for mode, got in runs.items():
                results[(mode, name)] = sorted(got)[len(got) // 2]  # the median run
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)
    print(f"{'url':<16} {'tokens off':>14} {'tokens required':>16} {'cost':>7}   p50 off/required")
    for name in PATHS:
        off, on = results[("off", name)], results[("required", name)]
        print(f"{name:<16} {off[0]:>12.0f}/s {on[0]:>14.0f}/s {100 * (1 - on[0] / off[0]):>6.1f}%   {off[1]} / {on[1]}")


if __name__ == "__main__":
    time.sleep(0)
    main()
