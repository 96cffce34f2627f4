"""Was a killed training process out of memory? The kernel's own account, not a guess.

A process killed with SIGKILL may have met the kernel's (or its container's) out-of-memory killer,
or someone ran `kill -9`. The kernel counts its OOM kills (/proc/vmstat `oom_kill`, and per cgroup
`memory.events` or, cgroup v1, `memory.oom_control`); a count that went up while the process ran,
or a peak close to the memory there was to have, makes memory the likely cause. Linux only:
elsewhere nothing is known and nothing is claimed.

    before = OomWatch.start()
    ... the process runs and dies ...
    before.verdict(peak_mb)   # 'the kernel's out-of-memory killer acted while it ran', or None
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")  # this process's cgroup (self/cgroup), the kernel's counters (vmstat, meminfo)
NEAR_AVAILABLE = 0.9  # a peak above this share of the memory available counts as close to it
NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as a huge number


def _counter(path: Path, name: str) -> int:
    """The value of `name` in a kernel file of 'name value' lines (0 where missing)."""
    try:
        match = re.search(rf"^{name}\s+(\d+)", path.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_cgroups() -> list[Path]:
    """This process's memory cgroup folders, itself first, then each parent up to the mount
    (cgroup v1's memory hierarchy where there is one, else cgroup v2's)."""
    try:
        lines = (PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    unified = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
    mounts = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            mounts["v1"] = (CGROUP_ROOT / "memory", path)
        elif controllers == "":
            mounts["v2"] = (unified, path)
    if not mounts:
        return []
    mount, path = mounts.get("v1") or mounts["v2"]
    here = mount / path.lstrip("/")
    return [folder for folder in (here, *here.parents) if folder.is_relative_to(mount) and folder.is_dir()]


def oom_kill_count() -> int:
    """OOM kills the kernel has counted: on the machine and in this process's cgroups."""
    count = _counter(PROC / "vmstat", "oom_kill")
    for folder in memory_cgroups():
        count += _counter(folder / "memory.events", "oom_kill") + _counter(folder / "memory.oom_control", "oom_kill")
    return count


def available_mb() -> float | None:
    """Memory a process here could still take, in MB: the machine's MemAvailable, or less where a
    cgroup limit leaves less; None where unknown."""
    room = [_counter(PROC / "meminfo", "MemAvailable:") * 1024 or None]
    for folder in memory_cgroups():
        limit = _number(folder / "memory.max") or _number(folder / "memory.limit_in_bytes")
        used = _number(folder / "memory.current") or _number(folder / "memory.usage_in_bytes") or 0
        if limit and limit < NO_LIMIT:
            room.append(max(0, limit - used))
    known = [bytes_ for bytes_ in room if bytes_ is not None]
    return min(known) / 2**20 if known else None


@dataclass(frozen=True)
class OomWatch:
    """The kernel's OOM-kill count when a process started; `verdict` says, after it died, whether
    memory makes its death likely."""
    kills_before: int

    @classmethod
    def start(cls) -> "OomWatch":
        return cls(oom_kill_count())

    def verdict(self, peak_mb: float | None) -> str | None:
        """Why memory was likely short, in words, or None (it was not, as far as the kernel says)."""
        if oom_kill_count() > self.kills_before:
            return "the kernel's out-of-memory killer acted while it ran"
        room = available_mb()  # the process is gone: what it held is free again
        if peak_mb and room and peak_mb >= NEAR_AVAILABLE * room:
            return f"its peak of {peak_mb:,.0f} MB came close to the {room:,.0f} MB available"
        return None



def memory_facts(peak_mb: float | None) -> str:
    """'peak 954 MB, 22,000 MB available' (what is known of it), for a death memory does not explain."""
    room = available_mb()
    parts = ([f"peak {peak_mb:,.0f} MB"] if peak_mb else []) + ([f"{room:,.0f} MB available"] if room else [])
    return ", ".join(parts)
