"""What the benchmark records say about the machine: cores, CPU model and the SIMD
extensions that decide the speed of the int8 graph.

Machines "like this one" are not all one kind of CPU: two 2-core AMD EPYC shares ran the
same int8 graph at 407 and 185 texts/s (short texts, one thread), while the torch fp32
baseline differed far less (docs/benchmarks.md, "Serving load"). onnxruntime's int8 kernels
use AVX-512 VNNI where the CPU has it, AVX2 otherwise; so the record names the extensions,
and speed-ups and efficiencies compare only between runs on the same kind of CPU."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

# The extensions onnxruntime's int8 kernels and torch's fp32 kernels pick between.
SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


def cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the first CPU
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe() -> str:
    """E.g. ``x86_64, 2 cores, AMD EPYC, avx2 fma (no avx512_vnni)``."""
    info = cpuinfo()
    present = set(info.get("flags", "").split())
    flags = [f for f in SIMD if f in present]
    vnni = "avx512_vnni" in present or "avx_vnni" in present
    simd = " ".join(flags) + ("" if vnni else " (no avx512_vnni)")
    model = info.get("model name") or platform.processor() or platform.machine()
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, {simd.strip()}"


def wait_idle(busy_cores: float = 0.15, window_s: float = 0.2, timeout_s: float = 60.0) -> float:
    """Wait until the machine's CPUs are idle (under ``busy_cores`` cores busy over a
    ``window_s`` window, from /proc/stat), at most ``timeout_s``; the seconds waited.

    A load cell ends when wrk stops, not when the server does: up to one request per client
    is still queued (32 long reviews: ~1 s of both cores). The next cell, or the ceiling
    timed right after a cell, would otherwise run beside that drain."""

    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks) - idle, sum(ticks)

    cores = os.cpu_count() or 1
    t0 = time.monotonic()
    try:
        busy, total = busy_and_total()
    except OSError:
        return 0.0  # not Linux: nothing to read
    while time.monotonic() - t0 < timeout_s:
        time.sleep(window_s)
        busy2, total2 = busy_and_total()
        if (busy2 - busy) / max(1, total2 - total) * cores < busy_cores:
            break
        busy, total = busy2, total2
    return time.monotonic() - t0


if __name__ == "__main__":
    print(describe())
