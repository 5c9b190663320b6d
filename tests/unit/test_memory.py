"""The heap-trimming rule, with injected RSS readings; and the real glibc calls where they exist."""

import ctypes.util
import sys
from types import SimpleNamespace

import pytest

from worker.memory import HeapTrimmer, release_free_heap, resident_bytes

MIB = 1 << 20


class Readings:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def __call__(self) -> int:
        return self.values.pop(0)


def test_trims_only_once_the_headroom_is_used_up():
    rss = Readings(500 * MIB, 530 * MIB, 564 * MIB, 565 * MIB, 505 * MIB, 520 * MIB)
    trims = []
    trimmer = HeapTrimmer.above_current(64 * MIB, read_rss=rss)
    assert trimmer is not None and trimmer.limit_bytes == 564 * MIB
    trimmer.trim = lambda: trims.append(True)
    trimmer.after_pass()  # 530: within the headroom
    trimmer.after_pass()  # 564: at the limit, not above it
    assert trims == []
    trimmer.after_pass()  # 565: above; 505 after the trim
    assert trims == [True] and trimmer.limit_bytes == 564 * MIB
    trimmer.after_pass()  # 520: back down after the trim
    assert trims == [True]


def test_memory_a_trim_cannot_hand_back_raises_the_limit():
    # 600 MiB that no trim frees (e.g. the CUDA host cache): one trim, not one per pass.
    rss = Readings(500 * MIB, 600 * MIB, 600 * MIB, 610 * MIB, 650 * MIB, 665 * MIB, 560 * MIB)
    trims = []
    trimmer = HeapTrimmer.above_current(64 * MIB, read_rss=rss)
    trimmer.trim = lambda: trims.append(True)
    trimmer.after_pass()  # 600: above 564, trimmed, still 600
    assert trims == [True] and trimmer.limit_bytes == 664 * MIB
    trimmer.after_pass()  # 610
    trimmer.after_pass()  # 650
    assert trims == [True]
    trimmer.after_pass()  # 665: another headroom's growth; 560 after the trim: the limit stays
    assert trims == [True, True] and trimmer.limit_bytes == 664 * MIB


def test_off_when_the_headroom_is_zero_or_the_rss_unknown():
    assert HeapTrimmer.above_current(0, read_rss=lambda: 500 * MIB) is None
    assert HeapTrimmer.above_current(64 * MIB, read_rss=lambda: 0) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc")
def test_real_readings_and_trim():
    assert resident_bytes() > 10 * MIB  # this interpreter with torch imported by other tests, or not: > 10 MiB
    assert isinstance(release_free_heap(), bool)
    assert ctypes.util.find_library("c")


def test_the_model_stage_calls_the_hook_after_every_pass(tiny_bert_dir):
    import queue

    from worker.batcher import Window
    from worker.encoder import Encoder, EncoderOptions
    from worker.errors import FirstFailure
    from worker.inference import InferenceStage
    from worker.metrics import WorkerMetrics

    encoder = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu"))
    calls = []
    stage = InferenceStage(encoder, queue.Queue(), queue.Queue(), FirstFailure(), WorkerMetrics(),
                           after_pass=lambda: calls.append(True))
    ids = encoder.tokenize(["one short text", "another one", "a third"])
    entries = [SimpleNamespace(token_ids=token_ids) for token_ids in ids]
    window = Window(entries=entries, lengths=[len(i) for i in ids], batches=[[0, 1], [2]])
    scored = stage.score(window)  # type: ignore[arg-type]
    assert len(calls) == 2
    assert scored.embeddings.shape == (3, encoder.dim)
