"""Real VMs: boot → cloud-init done, image build time, QEMU memory, how many fit.

Run as root from the repo root (after ``bash scripts/setup.sh --vm``):

    .venv/bin/python bench/bench_vm.py [--boots 3] [--pair] [--rebuild]

- **boot → cloud-init done**: ``--boots`` sequential boots (≤ 5) of netmeta's
  ``debian-12`` on an isolated network, image cached; each from
  ``Machines.boot`` (API instance, overlay, QEMU started) to cloud-init's final
  message on the console, which must name the OpenStack datasource. p50 and
  max; bounded at 300 s per boot (``--limit`` or ``NETMETA_VM_BOOT_SECONDS``
  raise it on a machine shared with other work). The 1-minute load average is
  recorded before and after every boot: on 2 cores, other work slows an
  emulated CPU in proportion, so a figure means little without it.
- **QEMU RSS per VM**: ``VmRSS`` of each QEMU process when its cloud-init is done;
  and its CPU share over the next 20 s, idle (what a booted VM costs).
- **how many fit**: ``--pair`` boots two at once (the most this 2-core machine
  is asked to run) and reports both times; the memory bound is
  MemAvailable / RSS, the CPU bound is the number of cores (a TCG vCPU is one
  busy host thread while it boots).
- **image build**: the build time recorded in ``image.json``; ``--rebuild``
  builds again into a temporary image directory (minutes) and reports that.

It builds its own stack (unique prefix, own state dir and fabric namespace)
and stops every VM and removes everything at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from netmeta.config import Config  # noqa: E402
from netmeta.drivers import qemu  # noqa: E402
from netmeta.vm.image import DEFAULT_IMAGE, Images  # noqa: E402
from netmeta.vm.machines import Machines  # noqa: E402
from tests.privileged.stack import make_stack  # noqa: E402

IMAGE_DIR = os.environ.get("NETMETA_IMAGE_DIR") or os.path.join(REPO, ".cache", "images")
BOOT_LIMIT = float(os.environ.get("NETMETA_VM_BOOT_SECONDS", "300"))
IDLE_SAMPLE = 20.0
IDLE_CPU: list[float] = []  # % of one core per idle VM, after cloud-init is done


def mem_available_kb() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def load() -> float:
    return round(os.getloadavg()[0], 1)


def boot_batch(machines: Machines, net_id: str, names: list[str],
               limit: float) -> list[tuple[str, float, int, str, float]]:
    """Boot ``names`` at once; (name, seconds to cloud-init done, RSS kB, accel, QEMU CPU s) each."""
    started = time.monotonic()
    for name in names:
        machines.boot(name, net_id, DEFAULT_IMAGE)
    results = []
    try:
        for name in names:
            done = machines.wait_ready(name, timeout=max(1.0, limit - (time.monotonic() - started)), poll=0.5)
            seconds = time.monotonic() - started
            if not done.openstack:
                raise SystemExit(f"{name}: cloud-init fell back to {done.datasource}")
            vm = machines.get(name)
            pid = vm.pid()
            results.append((name, seconds, qemu.rss_kb(pid) if pid else 0, vm.accel,
                            qemu.cpu_seconds(pid) if pid else 0.0))
        # What a booted, idle VM costs: its QEMU's CPU share over IDLE_SAMPLE seconds.
        pids = [p for p in (machines.get(n).pid() for n in names) if p]
        first = [qemu.cpu_seconds(p) for p in pids]
        time.sleep(IDLE_SAMPLE)
        IDLE_CPU.extend(round(100 * (qemu.cpu_seconds(p) - c) / IDLE_SAMPLE, 1) for p, c in zip(pids, first))
    finally:
        for name in names:
            machines.delete(name)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boots", type=int, default=3, help="sequential boots for the p50 (1-5)")
    parser.add_argument("--pair", action="store_true", help="also boot two VMs at once")
    parser.add_argument("--rebuild", action="store_true", help="time a fresh image build (minutes)")
    parser.add_argument("--limit", type=float, default=BOOT_LIMIT, help="seconds each boot may take (300)")
    args = parser.parse_args()
    if not 1 <= args.boots <= 5:
        parser.error("--boots must be between 1 and 5")

    report: dict[str, object] = {"cores": os.cpu_count(), "mem_available_mb": mem_available_kb() // 1024}
    if args.rebuild:
        with tempfile.TemporaryDirectory(prefix="netmeta-bench-image-") as tmp:
            before = load()
            started = time.monotonic()
            Images(Config(image_dir=tmp)).build(DEFAULT_IMAGE, lambda line: None)
            report["image_build_s"] = round(time.monotonic() - started, 1)
            report["image_build_load_before_after"] = (before, load())
    image = Images(Config(image_dir=IMAGE_DIR)).build(DEFAULT_IMAGE, lambda line: print(line, flush=True))
    report["image_build_recorded_s"] = image.build_seconds
    report["image_disk_mb"] = os.stat(image.disk).st_blocks * 512 // (1024 * 1024)

    for stack in make_stack(enable_isolated_metadata=True, image_dir=IMAGE_DIR):
        net, _ = stack.network("bench-vm", "192.168.141.0/24", gateway=False)
        stack.converged()
        machines = Machines(stack.config, stack.client)
        singles: list[float] = []
        rss_mb: list[int] = []
        cpu_s: list[float] = []
        loads: list[tuple[float, float]] = []
        for i in range(args.boots):
            before = load()
            ((_, seconds, rss, accel, cpu),) = boot_batch(machines, net["id"], [f"bench{i}"], args.limit)
            loads.append((before, load()))
            singles.append(seconds)
            print(f"boot {i + 1}/{args.boots}: cloud-init done after {seconds:.1f} s, QEMU RSS {rss // 1024} MB, "
                  f"{cpu:.0f} CPU-s ({accel}), load {loads[-1][0]} -> {loads[-1][1]}", flush=True)
            rss_mb.append(rss // 1024)
            cpu_s.append(round(cpu, 1))
            report["accel"] = accel
        report["rss_mb"] = rss_mb
        report["qemu_cpu_s"] = cpu_s
        report["boot_to_done_s"] = [round(s, 1) for s in singles]
        report["boot_to_done_p50_s"] = round(statistics.median(singles), 1)
        report["load_before_after"] = loads
        if args.pair:
            before = load()
            pair = boot_batch(machines, net["id"], ["pair0", "pair1"], args.limit)
            report["pair_load_before_after"] = (before, load())
            report["pair_to_done_s"] = [round(s, 1) for _, s, _, _, _ in pair]
            report["pair_rss_mb"] = [r // 1024 for _, _, r, _, _ in pair]
            report["pair_qemu_cpu_s"] = [round(c, 1) for *_, c in pair]
            print(f"two at once: done after {', '.join(f'{s:.1f} s' for _, s, *_ in pair)}", flush=True)
        report["idle_cpu_pct_per_vm"] = IDLE_CPU
        report["fit_by_memory"] = (mem_available_kb() // 1024) // max(max(rss_mb), 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
