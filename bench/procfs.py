"""CPU accounting from /proc (Linux): per process and for the whole machine.

On a 2-core machine the load generator and every server share the CPUs, so the CPU
seconds each process burns per call are the figures that survive the sharing; a
throughput alone mixes the server's cost with the generator's.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def _pid_cpu_seconds(pid: int) -> float | None:
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its ")" are fixed.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


CpuSnapshot = dict[tuple[str, int], float]


def cpu_snapshot(groups: Mapping[str, Sequence[int]]) -> CpuSnapshot:
    """user + system CPU seconds so far of every live pid, keyed by (group, pid)."""
    snapshot: CpuSnapshot = {}
    for name, pids in groups.items():
        for pid in pids:
            seconds = _pid_cpu_seconds(pid)
            if seconds is not None:
                snapshot[(name, pid)] = seconds
    return snapshot


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots, over pids present in both."""
    groups: dict[str, float] = {}
    for key, seconds in after.items():
        if key in before:
            groups[key[0]] = groups.get(key[0], 0.0) + seconds - before[key]
    return groups


def postgres_backends(database_prefix: str) -> list[int]:
    """Pids of PostgreSQL backends connected to databases whose name starts with the prefix.

    A backend's title is ``postgres: CLUSTER: USER DATABASE CLIENT STATE``; the CPU of the
    backends serving a run's own databases is the database's share of the work, whatever
    else the server is doing for others.
    """
    pids: list[int] = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = title.split()
        if words[:1] == ["postgres:"] and any(w.startswith(database_prefix) for w in words):
            pids.append(int(entry.name))
    return pids


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative busy and total jiffies of all CPUs."""

    busy: int
    total: int


def machine_cpu() -> MachineCpu:
    """The first line of /proc/stat, as busy and total jiffies."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return MachineCpu(total - idle, total)


def busy_share(before: MachineCpu, after: MachineCpu) -> float:
    """Busy share of all CPUs between two readings (0..1, NaN if no time passed)."""
    total = after.total - before.total
    return (after.busy - before.busy) / total if total > 0 else math.nan


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def resident_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` (``VmRSS``) in MiB, or None if it is gone."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
