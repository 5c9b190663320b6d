"""librdkafka's statistics reports, read on the poll thread: consumer lag per partition, broker
reachability, and stalled partitions (`worker.stalls`).

Called from inside consume() (librdkafka's `stats_cb`), once per `statistics.interval.ms`, so it
costs nothing per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from worker.health import WorkerStatus
from worker.metrics import WorkerMetrics
from worker.stalls import PartitionKey, StallDetector, fetch_progress

log = logging.getLogger(__name__)

# Stall detection may ask the broker for the end of a partition never fetched; it does so on the
# poll thread, inside the statistics callback, so at most this often per report and this briefly
# (a broker that does not answer must not hold up polling).
END_QUERIES_PER_REPORT = 1
END_QUERY_TIMEOUT_S = 1.0


class ConsumerStatistics:
    def __init__(
        self,
        status: WorkerStatus,
        metrics: WorkerMetrics,
        liveness_timeout_s: float,
        active_partitions: Callable[[], set[PartitionKey]],
    ) -> None:
        """`active_partitions()`: the assigned partitions the worker wants fetched (not paused)."""
        self.status = status
        self.metrics = metrics
        self.active_partitions = active_partitions
        self.stalls = StallDetector(liveness_timeout_s)
        self.consumer: Any = None  # set once the consumer exists; asked for partition ends
        self._stalled: set[PartitionKey] = set()
        self._end_queries_left = 0

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's `stats_cb`."""
        stats = orjson.loads(stats_json)
        self._check_stalls(stats)
        self.status.connected = any(broker.get("state") == "UP" for broker in stats.get("brokers", {}).values())
        lag: dict[tuple[tuple[str, str | int], ...], float] = {}
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, partition_stats in topic_stats.get("partitions", {}).items():
                if partition == "-1" or partition_stats.get("fetch_state") != "active":
                    continue
                value = partition_stats.get("consumer_lag", -1)
                high = partition_stats.get("hi_offset", -1)
                if value < 0 and high >= 0:
                    # Nothing consumed from it yet: everything in it is still to do.
                    value = high - max(partition_stats.get("lo_offset", 0), 0)
                if value >= 0:
                    lag[(("partition", int(partition)), ("topic", topic))] = value
        self.metrics.replace_gauge("consumer.lag", lag)

    def _check_stalls(self, stats: dict[str, Any]) -> None:
        """A safety net for causes nobody has thought of: `/livez` fails while a partition stalls."""
        self._end_queries_left = END_QUERIES_PER_REPORT
        stalls = self.stalls.observe(time.monotonic(), fetch_progress(stats), self.active_partitions(), self._partition_end)
        stalled = {(stall.topic, stall.partition) for stall in stalls}
        for stall in stalls:
            if (stall.topic, stall.partition) not in self._stalled:
                log.warning("partition stalled", extra={"partition": f"{stall.topic}:{stall.partition}", "reason": stall.reason()})
        self._stalled = stalled
        self.status.stalled_partitions = [stall.reason() for stall in stalls]
        self.metrics.set_gauge("partitions.stalled", len(stalls))

    def _partition_end(self, key: PartitionKey) -> int:
        """The partition's high watermark, asked of the broker; -1 when it does not answer, or when
        this report has used its queries (a partition found to have nothing waiting restarts its
        clock, so the next candidate gets the query at a later report)."""
        if self._end_queries_left <= 0 or self.consumer is None:
            return -1
        self._end_queries_left -= 1
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(*key), timeout=END_QUERY_TIMEOUT_S, cached=False)
        except Exception:  # noqa: BLE001 - no answer: no verdict this time
            return -1
        return high
