"""The heap-trimming rule, with injected RSS readings; the real glibc calls where they exist; and the
bounds on the kernel caches behind torch's CPU ops."""

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from worker.memory import HeapTrimmer, bound_kernel_caches, release_free_heap, resident_bytes, set_by_environment

MIB = 1 << 20


class Readings:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def __call__(self) -> int:
        return self.values.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_trims_only_once_the_headroom_is_used_up():
    # The baseline, one reading per pass, and one after the trim (the floor it left).
    rss = Readings(500 * MIB, 530 * MIB, 564 * MIB, 565 * MIB, 520 * MIB, 520 * MIB)
    trims = []
    trimmer = HeapTrimmer.above_current(64 * MIB, read_rss=rss)
    assert trimmer is not None and trimmer.limit_bytes == 564 * MIB
    trimmer.trim = lambda: trims.append(True)
    trimmer.clock = Clock()
    trimmer.after_pass()  # 530: within the headroom
    trimmer.after_pass()  # 564: at the limit, not above it
    assert trims == []
    trimmer.after_pass()  # 565: above
    assert trims == [True]
    trimmer.after_pass()  # back down after the trim
    assert trims == [True]


class Heap:
    """An RSS that grows by `growth` per pass (up to `ceiling`) and that each trim brings down by `freed`."""

    def __init__(self, rss: int, growth: int, freed: int, clock: Clock, ceiling: int | None = None) -> None:
        self.rss, self.growth, self.freed, self.clock, self.ceiling = rss, growth, freed, clock, ceiling
        self.trims: list[float] = []

    def read(self) -> int:
        return self.rss

    def trim(self) -> None:
        self.trims.append(self.clock.now)
        self.rss -= self.freed
        self.clock.now += 0.010  # each trim takes 10 ms

    def passes(self, trimmer: HeapTrimmer, count: int) -> None:
        for _ in range(count):  # a pass every 20 ms
            self.rss += self.growth
            if self.ceiling is not None:
                self.rss = min(self.rss, self.ceiling)
            trimmer.after_pass()
            self.clock.now += 0.020


def test_trims_that_hold_wait_their_share_of_the_time_and_no_longer():
    clock = Clock()
    # Every trim brings the RSS 100 MiB down, and it climbs back over the limit in ~0.64 s.
    heap = Heap(600 * MIB, growth=2 * MIB, freed=100 * MIB, clock=clock)
    trimmer = HeapTrimmer(564 * MIB, read_rss=heap.read, trim=heap.trim, clock=clock)
    assert trimmer.max_time_share == 0.05
    heap.passes(trimmer, 500)  # 10 s
    gaps = [b - a for a, b in zip(heap.trims, heap.trims[1:])]
    # 10 ms of trimming allows the next trim 0.2 s later (5% of the time); these held, so each
    # came as soon as the RSS was over the limit again.
    assert len(gaps) >= 8 and all(0.6 <= gap < 1.1 for gap in gaps), gaps
    assert trimmer._backoff == 1.0


def test_memory_no_trim_releases_raises_the_limit():
    # 600 MiB that no trim frees (oneDNN's kernel cache, librdkafka's queues): one trim finds out.
    clock = Clock()
    heap = Heap(600 * MIB, growth=0, freed=0, clock=clock)
    trimmer = HeapTrimmer(564 * MIB, read_rss=heap.read, trim=heap.trim, clock=clock, headroom_bytes=64 * MIB)
    heap.passes(trimmer, 100)
    assert len(heap.trims) == 1 and trimmer.limit_bytes == 664 * MIB
    heap.growth = 1 * MIB  # free heap grows above that floor: trimmed once past the new limit
    heap.freed = 80 * MIB
    heap.passes(trimmer, 100)
    assert len(heap.trims) == 2 and trimmer.limit_bytes == 664 * MIB


def test_trims_that_do_not_hold_back_off_and_one_that_holds_resets_the_wait():
    # Working set that a trim releases and the next passes take back at once (events in flight,
    # buffers faulted in again): each trim that does not hold doubles the wait.
    clock = Clock()
    heap = Heap(600 * MIB, growth=40 * MIB, freed=40 * MIB, clock=clock, ceiling=600 * MIB)
    trimmer = HeapTrimmer(564 * MIB, read_rss=heap.read, trim=heap.trim, clock=clock, headroom_bytes=0)
    heap.passes(trimmer, 1000)  # 20 s
    gaps = [b - a for a, b in zip(heap.trims, heap.trims[1:])]
    # 0.2 s after the first trim (its 5% share); doubled after each that did not hold.
    assert len(gaps) == 6
    assert all(wait <= gap < wait + 0.03 for wait, gap in zip([0.2, 0.4, 0.8, 1.6, 3.2, 6.4], gaps)), gaps
    heap.passes(trimmer, 5000)  # 100 s more: the wait stops growing at 64 x 0.2 s
    longest = max(b - a for a, b in zip(heap.trims, heap.trims[1:]))
    assert 12.8 <= longest < 12.83
    # Fragmentation: trims hand back 100 MiB that takes the heap 0.6 s or more to grow again;
    # trims that hold bring the wait back to the share.
    heap.freed, heap.growth = 100 * MIB, 2 * MIB
    heap.passes(trimmer, 2000)
    later = [b - a for a, b in zip(heap.trims, heap.trims[1:])][-5:]
    assert all(0.6 <= gap < 1.1 for gap in later), later
    assert trimmer._backoff == 1.0


def test_off_when_the_headroom_is_zero_or_the_rss_unknown():
    assert HeapTrimmer.above_current(0, read_rss=lambda: 500 * MIB) is None
    assert HeapTrimmer.above_current(64 * MIB, read_rss=lambda: 0) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc")
def test_real_readings_and_trim():
    assert resident_bytes() > 10 * MIB  # this interpreter with torch imported by other tests, or not: > 10 MiB
    assert isinstance(release_free_heap(), bool)
    assert ctypes.util.find_library("c")


# Forward passes of two shapes on a thread of their own (a thread arena, as the model thread has):
# each allocates its buffers, writes them and frees them all. Prints each pass's minor page faults.
PASSES = textwrap.dedent(
    """
    import ctypes, json, resource, sys, threading
    from worker.memory import tune_allocator
    tuned = tune_allocator() if sys.argv[1] == "tuned" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MIB = 1 << 20
    SHAPES = [[24 * MIB, 6 * MIB, 6 * MIB, 24 * MIB, 6 * MIB], [3 * MIB, 1 * MIB, 3 * MIB, 12 * MIB]]
    faults = []
    def passes():
        for number in range(12):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            blocks = [libc.malloc(size) for size in SHAPES[number % 2]]
            for block, size in zip(blocks, SHAPES[number % 2]):
                ctypes.memset(block, 1, size)
            for block in blocks:
                libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    thread = threading.Thread(target=passes)
    thread.start()
    thread.join()
    print(json.dumps({"tuned": tuned, "faults": faults}))
    """
)


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallopt"), reason="glibc's mallopt"
)


def run_passes(mode: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PASSES, mode], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, check=True)
    return json.loads(done.stdout)


@needs_glibc
def test_tuned_allocator_keeps_a_pass_buffers_mapped_for_the_next_pass():
    tuned = run_passes("tuned")
    assert tuned["tuned"] is True
    # The first pass maps its ~66 MiB (16,900 pages); every later one reuses them.
    assert tuned["faults"][0] > 10_000
    assert sum(tuned["faults"][1:]) < 100, tuned["faults"]
    # glibc's defaults hand a freed heap top back and fault it in again on the next large pass
    # (1,537 faults every other pass on glibc 2.36): the difference the tuning makes.
    plain = run_passes("plain")
    assert sum(plain["faults"][2:]) > 1_000, plain["faults"]


@needs_glibc
def test_allocator_options_set_in_the_environment_are_left_alone():
    # A fixed 1 MiB mmap threshold from the user: every large buffer is mapped afresh, so each
    # pass faults all its pages again. With the worker's top pad as well, large buffers would come
    # from the heap's spare top instead, whatever the threshold: the worker must set nothing.
    user = run_passes("tuned", MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    assert user["tuned"] is False
    assert min(user["faults"]) > 4_000, user["faults"]


def test_which_options_the_environment_sets():
    assert set_by_environment(-3, {"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert set_by_environment(-1, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=0"})
    assert not set_by_environment(-1, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert not set_by_environment(-2, {"MALLOC_ARENA_MAX": "2"})  # arenas are not one of the worker's options


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


def test_kernel_caches_are_bounded_unless_the_user_set_them():
    environ: dict[str, str] = {}
    assert bound_kernel_caches(environ) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", "LRU_CACHE_CAPACITY": "1"}
    assert environ == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", "LRU_CACHE_CAPACITY": "1"}
    # oneDNN also reads its older DNNL_ name: a user who set either keeps their capacity.
    users = {"DNNL_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "64"}
    assert bound_kernel_caches(users) == {}
    assert users == {"DNNL_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "64"}


# Loads a model on the CPU, then runs one oneDNN convolution over 10 batch shapes and the first
# shape again: oneDNN's verbose log says whether that last one came from its cache.
CACHE_PROBE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from worker.encoder import Encoder, EncoderOptions
    import torch
    Encoder(EncoderOptions(path=Path(sys.argv[1]), device="cpu"))
    weights = torch.randn(8, 3, 3, 3)
    with torch.inference_mode():
        for rows in [*range(2, 12), 2]:
            torch.nn.functional.conv2d(torch.randn(rows, 3, 16, 16), weights)
    print("ENV", os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), os.environ.get("LRU_CACHE_CAPACITY"))
""")


def last_convolution_from_cache(model_dir, **env: str) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE, str(model_dir)], capture_output=True, text=True, timeout=120, check=True,
        env={**{k: v for k, v in os.environ.items() if "CACHE_CAPACITY" not in k},
             "HF_HUB_OFFLINE": "1", "ONEDNN_VERBOSE": "profile_create", **env},
    )
    creations = [line for line in done.stdout.splitlines() if "create:cache_" in line and ",convolution," in line]
    assert len(creations) == 11, done.stdout[-2000:]
    settings = next(line for line in done.stdout.splitlines() if line.startswith("ENV "))
    return "create:cache_hit" in creations[-1], settings


def test_the_encoder_bounds_onednn_kernel_cache_before_its_first_pass(tiny_bert_dir):
    # Bounded at 8 by the encoder: the first shape's kernel is gone after 10 others.
    assert last_convolution_from_cache(tiny_bert_dir) == (False, "ENV 8 1")
    # The user's own capacity holds it.
    assert last_convolution_from_cache(tiny_bert_dir, ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024",
                                       LRU_CACHE_CAPACITY="1024") == (True, "ENV 1024 1024")
