"""The test launcher that slows the worker's model down (tests.support.slow_worker)."""

from __future__ import annotations

import time

import pytest

from tests.support.slow_worker import SLOW_BATCH_ENV, seconds_from, slow_down


class CountingEncoder:
    """Takes what `worker.encoder.Encoder.encode` takes: token ids and the label set to score with."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[int]], object]] = []

    def encode(self, token_ids: list[list[int]], label_set: object = None) -> str:
        self.calls.append((token_ids, label_set))
        return f"encoded {len(token_ids)}"


def test_slowed_encoder_returns_the_real_result_after_the_wait():
    encoder = CountingEncoder()
    slow_down(encoder, 0.2)
    started = time.monotonic()
    result = encoder.encode([[1, 2], [3]], "labels v2")
    assert time.monotonic() - started >= 0.2
    assert result == "encoded 2" and encoder.calls == [([[1, 2], [3]], "labels v2")]


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_wait_that_is_not_zero_or_more_seconds_is_refused_with_its_name(raw, monkeypatch):
    monkeypatch.setenv(SLOW_BATCH_ENV, raw)
    with pytest.raises(ValueError, match=SLOW_BATCH_ENV):
        seconds_from(SLOW_BATCH_ENV)


def test_no_wait_unless_asked(monkeypatch):
    monkeypatch.delenv(SLOW_BATCH_ENV, raising=False)
    assert seconds_from(SLOW_BATCH_ENV) == 0
    monkeypatch.setenv(SLOW_BATCH_ENV, "1.5")
    assert seconds_from(SLOW_BATCH_ENV) == 1.5
