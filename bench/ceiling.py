"""The ceiling: the encoder alone over the same texts, pre-tokenized, sorted by length.

No Kafka, no JSON, no tokenizer in the timed part: only `Encoder.encode` (padding, the forward
pass and the copy of scores and embeddings to the host), one batch size for the whole set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.rates import PaddedRates
from worker.encoder import Encoder


@dataclass(frozen=True)
class PassResult(PaddedRates):
    batch_size: int
    events: int
    seconds: float
    real_tokens: int
    padded_tokens: int


def sorted_batches(token_ids: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    ordered = sorted(token_ids, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def timed_pass(encoder: Encoder, token_ids: list[list[int]], batch_size: int) -> PassResult:
    batches = sorted_batches(token_ids, batch_size)
    started = time.perf_counter()
    for batch in batches:
        encoder.encode(batch)
    seconds = time.perf_counter() - started
    return PassResult(
        batch_size=batch_size,
        events=len(token_ids),
        seconds=seconds,
        real_tokens=sum(len(ids) for ids in token_ids),
        padded_tokens=sum(max(len(ids) for ids in batch) * len(batch) for batch in batches),
    )


def stratified_sample(token_ids: list[list[int]], size: int) -> list[list[int]]:
    """Every k-th text in length order: a small set with the same length distribution."""
    if len(token_ids) <= size:
        return list(token_ids)
    ordered = sorted(token_ids, key=len)
    step = len(ordered) / size
    return [ordered[int(i * step)] for i in range(size)]


def best_batch_size(
    encoder: Encoder, token_ids: list[list[int]], sizes: tuple[int, ...], sample: int, repeats: int
) -> tuple[int, dict[int, float]]:
    """The batch size with the best events/s on a length-stratified sample (best of `repeats`)."""
    subset = stratified_sample(token_ids, sample)
    best: dict[int, float] = {}
    for _ in range(repeats):
        for size in sizes:  # interleaved, so a burst of background load hits every size alike
            rate = timed_pass(encoder, subset, size).events_per_s
            best[size] = max(best.get(size, 0.0), rate)
    return max(best, key=best.__getitem__), best


def small_batch_seconds(encoder: Encoder, token_ids: list[list[int]], rows: int, repeats: int = 30) -> float:
    """Median time of one forward pass over `rows` texts picked at random from the set (light-load batches)."""
    import random
    import statistics

    rng = random.Random(5)
    times = []
    for _ in range(repeats):
        batch = rng.sample(token_ids, rows)
        started = time.perf_counter()
        encoder.encode(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def small_batch_table(encoder: Encoder, token_ids: list[list[int]], largest: int = 8) -> dict[int, float]:
    """`small_batch_seconds` for 1..`largest` rows, measured up front, with the model alone."""
    return {rows: small_batch_seconds(encoder, token_ids, rows) for rows in range(1, largest + 1)}


def compare_precisions(encoder: Encoder, reference: Encoder, token_ids: list[list[int]], batch_size: int):  # type: ignore[no-untyped-def]
    """`encoder`'s outputs against `reference`'s (float32) on every text of the set, untimed:
    the worker.precision figures (worst cosine, top labels changed), over the whole set."""
    import numpy as np

    from worker.precision import compare_outputs

    batches = sorted_batches(token_ids, batch_size)
    outputs = [[model.encode(batch) for batch in batches] for model in (reference, encoder)]
    return compare_outputs(*(np.concatenate([getattr(out, name) for out in runs])
                             for runs in outputs for name in ("embeddings", "scores")))
