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
from pathlib import Path

# The extensions onnxruntime's int8 kernels and torch's fp32 kernels pick between.
SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_flags() -> list[str]:
    """The extensions of ``SIMD`` that this CPU has (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in SIMD if f in flags]


def describe() -> str:
    """E.g. ``x86_64, 2 cores, AMD EPYC, avx2 fma (no avx512_vnni)``."""
    flags = simd_flags()
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    simd = " ".join(flags) + ("" if vnni else " (no avx512_vnni)")
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, {simd.strip()}"


if __name__ == "__main__":
    print(describe())
