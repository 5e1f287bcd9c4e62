"""Where one metadata worker's time goes under wrk: py-spy samples, self and inclusive shares.

Run as root from the repository root (py-spy is not a dependency: ``.venv/bin/pip install py-spy``):

    .venv/bin/python bench/profile_metadata.py [keep-alive] [close]

Builds a netmeta with ``metadata_workers = 1`` (rate limiting off), one
isolated network and one guest, runs ``wrk -t2 -c32 -d7s`` inside the guest
namespace against ``meta_data.json`` and records the worker for 5 s at
250 Hz (``py-spy record -f raw``, output in /tmp/netmeta-prof-<mode>.txt).
"""
import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from netmeta.config import RateLimitConfig  # noqa: E402
from tests.privileged.stack import make_stack  # noqa: E402

META = "/openstack/latest/meta_data.json"
PYSPY = os.path.join(os.path.dirname(sys.executable), "py-spy")

def top(path, n=25):
    leaf, incl = collections.Counter(), collections.Counter()
    total = 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        c = int(count); total += c
        frames = stack.split(";")
        leaf[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    print(f"--- {path}: {total} samples; self:")
    for f, c in leaf.most_common(n):
        print(f"  {100*c/total:5.1f}%  {f}")
    print("  inclusive:")
    for f, c in incl.most_common(n + 15):
        print(f"  {100*c/total:5.1f}%  {f}")

for stack in make_stack(enable_isolated_metadata=True, metadata_workers=1,
                        rate_limiting=RateLimitConfig(rate_limit_enabled=False)):
    net, _ = stack.network("prof", "10.93.0.0/24", gateway=False)
    guest = stack.boot("prof1", net["id"])
    stack.fetch(guest, META)
    pid = stack.metadata.pid
    subprocess.run(["ip", "netns", "exec", guest.namespace, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
    for mode in sys.argv[1:] or ["keep-alive", "close"]:
        hdr = ["-H", "Connection: close"] if mode == "close" else []
        w = subprocess.Popen(["ip", "netns", "exec", guest.namespace, "wrk", "-t2", "-c32", "-d7s", *hdr,
                              f"http://169.254.169.254{META}"], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        out = f"/tmp/netmeta-prof-{mode}.txt"
        subprocess.run([PYSPY, "record", "-p", str(pid), "-d", "5", "-r", "250", "-f", "raw", "-o", out, "--nonblocking"],
                       capture_output=True)
        print(mode, w.communicate()[0].splitlines()[-2:])
        top(out)
