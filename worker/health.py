"""Liveness and readiness: pure functions of the worker's status and a clock.

- live: the poll loop has turned, no stage has been stuck on one item, within the bound, and no
  assigned partition that the worker wants fetched has stalled (`worker.stalls`).
- ready: the model is loaded and warmed up, the consumer has subscribed (partitions assigned or
  waiting for an assignment), a broker answers, and the worker is not shutting down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class Stage(Protocol):
    name: str
    last_beat: float
    busy_since: float | None


@dataclass
class WorkerStatus:
    """Written by the worker's threads, read by the HTTP server. Monotonic seconds."""

    model_ready: bool = False
    subscribed: bool = False
    connected: bool = True
    stopping: bool = False
    assigned_partitions: int = 0
    poll_beat: float | None = None
    # Reasons, one per stalled partition, from the last statistics report (already past the timeout).
    stalled_partitions: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: list[str]


def liveness(status: WorkerStatus, timeout_s: float, now: float) -> Verdict:
    reasons = []
    if status.poll_beat is not None and now - status.poll_beat > timeout_s:
        reasons.append(f"poll loop silent for {now - status.poll_beat:.0f}s")
    for stage in status.stages:
        if stage.busy_since is not None and now - stage.busy_since > timeout_s:
            reasons.append(f"{stage.name} stage stuck for {now - stage.busy_since:.0f}s")
        elif stage.busy_since is None and now - stage.last_beat > timeout_s:
            reasons.append(f"{stage.name} stage silent for {now - stage.last_beat:.0f}s")
    reasons.extend(status.stalled_partitions)
    return Verdict(not reasons, reasons)


def readiness(status: WorkerStatus, timeout_s: float, now: float) -> Verdict:
    reasons = []
    if not status.model_ready:
        reasons.append("model not loaded and warmed up yet")
    if not status.subscribed:
        reasons.append("not subscribed yet")
    if not status.connected:
        reasons.append("no broker reachable")
    if status.stopping:
        reasons.append("shutting down")
    live = liveness(status, timeout_s, now)
    return Verdict(not reasons and live.ok, reasons + live.reasons)
