"""What this machine's CPU is, read without torch: its name and the bf16 instruction flags it
lists (`/proc/cpuinfo`). The CPU precision probe keys its cached choice on them
(`hw2lib.train.cpu_probe`); a run records the device's name (`hw2lib.core.runtime.run_info`)."""

from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni", "avx512_vnni")


def cpu_info(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """(model name, the bf16-relevant instruction flags it lists) from /proc/cpuinfo's text."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), sorted(flags & set(BF16_FLAGS))
