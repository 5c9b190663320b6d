"""Decode, validate and tokenize consumed records: raw Kafka messages in, entries with token counts out.

Runs on the poll thread, so token counts are known when the batcher forms windows. Every
record is tracked for commit before anything else can finish, valid or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from worker.decoding import Decoded, DecodePolicy, Reason, Rejection, check_record_size, decode, record_bytes
from worker.entries import Entry
from worker.offsets import OffsetTracker
from worker.outputs import SourceCoordinates
from worker.tracing import Tracing

Tokenize = Callable[[list[str], int], list[list[int]]]


class Intake:
    def __init__(
        self,
        policy: DecodePolicy,
        tokenize: Tokenize,
        max_length: int,
        reject_overlength: bool,
        tracker: OffsetTracker,
        tracing: Tracing | None = None,
    ) -> None:
        self.policy = policy
        self.tokenize = tokenize
        self.max_length = max_length
        self.reject_overlength = reject_overlength
        self.tracker = tracker
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.tokenize_seconds = 0.0  # the tokenizer's own share of the last `accept`

    def accept(self, messages: Sequence[Any]) -> tuple[list[Entry], list[int | None]]:
        """Entries in message order, and their token counts (None for a rejected entry).

        `messages` are confluent-kafka Messages without errors (anything with the same methods).
        """
        now_ns = time.time_ns()
        entries: list[Entry] = []
        texts: list[str] = []
        text_rows: list[int] = []
        coordinates = [(message.topic(), message.partition(), message.offset()) for message in messages]
        tracked = self.tracker.track_all(coordinates)  # one lock for the chunk, not one per record
        for message, (topic, partition, offset), offset_entry in zip(messages, coordinates, tracked):
            timestamp_type, timestamp = message.timestamp()
            source = SourceCoordinates(topic, partition, offset, timestamp if timestamp_type else None)
            value = message.value()
            entry = Entry(
                source=source,
                key=message.key(),
                value=value,
                headers=message.headers(),
                offset=offset_entry,
                consumed_ns=now_ns,
            )
            if self.tracing is not None:
                entry.trace_context = self.tracing.extract(entry.headers)
            size = record_bytes(value, entry.key, entry.headers)
            outcome = check_record_size(size, self.policy) or decode(value, source.default_id(), self.policy)
            if isinstance(outcome, Decoded):
                entry.event_id = outcome.id
                texts.append(outcome.text)
                text_rows.append(len(entries))
            else:
                entry.rejection = outcome
                if outcome.reason == Reason.RECORD_TOO_LARGE:
                    _shed_oversized(entry, self.policy.max_record_bytes)
            entries.append(entry)

        overflow = 1 if self.reject_overlength else 0
        started = time.perf_counter()
        token_ids = self.tokenize(texts, overflow)
        self.tokenize_seconds = time.perf_counter() - started
        lengths: list[int | None] = [None] * len(entries)
        for row, ids in zip(text_rows, token_ids):
            entry = entries[row]
            length = len(ids)
            if length > self.max_length:
                entry.rejection = Rejection(
                    Reason.TOO_MANY_TOKENS, f"text has more than {self.max_length} tokens (WORKER_MODEL__MAX_LENGTH)"
                )
            else:
                entry.token_ids = ids
                lengths[row] = length
        return entries, lengths


def _shed_oversized(entry: Entry, limit: int) -> None:
    """Its dead letter goes without the value (and without key and headers when those alone pass the limit).

    A copy would need the producer and the dead-letter topic to take what the worker refused: on a
    broker with the usual 1 MB limit the copy would fail and stop the worker on every restart. The
    original stays in the input topic, at the coordinates the dead letter's headers name.
    """
    entry.value = None
    if record_bytes(None, entry.key, entry.headers) > limit:
        entry.key = None
        entry.headers = None
