"""CPU time of a process's threads, from /proc, and its share per event by thread role.

The worker names its threads "model" and "publish" as the OS sees them (`worker.threads`);
its main thread runs the poll loop; librdkafka names its own threads "rdk:...". Threads that
ended between two snapshots are missing from the second one: their time is not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAIN_THREAD = "poll loop (main thread)"
LIBRDKAFKA = "librdkafka (rdk:*)"


@dataclass(frozen=True)
class ThreadTime:
    name: str
    seconds: float  # user + system CPU time so far


def parse_stat(text: str) -> tuple[str, list[str]]:
    """The name and the fields after it of a /proc stat line (the name may hold spaces and parentheses)."""
    name, rest = text.split("(", 1)[1].rsplit(")", 1)
    return name, rest.split()


def cpu_seconds(fields: list[str], ticks_per_s: int) -> float:
    """utime + stime (fields 14 and 15 of stat(5); here after the name, so 11 and 12)."""
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def read_threads(pid: int) -> dict[int, ThreadTime]:
    """Every live thread of `pid`: tid -> its name and CPU seconds so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, fields = parse_stat(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
        except OSError:  # the thread ended meanwhile
            continue
        threads[int(tid)] = ThreadTime(name, cpu_seconds(fields, ticks))
    return threads


def thread_role(pid: int, tid: int, name: str) -> str:
    """The group a thread's time is reported under: the main thread, librdkafka's, else its name."""
    if tid == pid:
        return MAIN_THREAD
    if name.startswith("rdk:"):
        return LIBRDKAFKA
    return name


def seconds_by_role(pid: int, before: dict[int, ThreadTime], after: dict[int, ThreadTime]) -> dict[str, float]:
    """CPU seconds each role used between two snapshots; a thread born in between counts from zero."""
    used: dict[str, float] = {}
    for tid, now in after.items():
        earlier = before.get(tid)
        # A reused tid with another name is another thread.
        start = earlier.seconds if earlier is not None and earlier.name == now.name else 0.0
        role = thread_role(pid, tid, now.name)
        used[role] = used.get(role, 0.0) + max(0.0, now.seconds - start)
    return used


def microseconds_per_event(seconds: dict[str, float], events: int) -> dict[str, float]:
    return {role: used * 1e6 / events for role, used in seconds.items()}
