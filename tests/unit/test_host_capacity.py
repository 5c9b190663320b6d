"""The host-capacity benchmark's pure parts: per-thread CPU from /proc, the ratio and its target,
its section of docs/benchmarks.md (replaced in place, kept across a run of bench/run.py)."""

import os
import threading

import pytest

from bench import host_capacity, host_report, thread_cpu
from bench.host_report import MODEL, PASS_THROUGH, TOKENIZER, HostRound, HostRun
from bench.sections import HOST_CAPACITY
from bench.thread_cpu import LIBRDKAFKA, MAIN_THREAD, ThreadTime

# A real /proc/PID/task/TID/stat line of a thread whose name holds a space and parentheses.
STAT = ("4242 (rdk:main (x)) S 1 4242 4242 0 -1 4194560 1200 0 3 0 "
        "250 40 0 0 20 0 9 0 1000 400000000 30000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0")


def test_a_stat_line_gives_the_name_and_the_cpu_seconds_of_user_and_system_time():
    name, fields = thread_cpu.parse_stat(STAT)
    assert name == "rdk:main (x)"
    assert fields[0] == "S"
    assert thread_cpu.cpu_seconds(fields, ticks_per_s=100) == pytest.approx(2.9)  # (250 + 40) ticks


def test_threads_are_grouped_by_role_and_their_time_counted_between_snapshots():
    pid = 100
    before = {100: ThreadTime("python", 5.0), 101: ThreadTime("model", 10.0), 102: ThreadTime("rdk:broker1", 1.0),
              103: ThreadTime("rdk:main", 0.5), 104: ThreadTime("publish", 2.0), 105: ThreadTime("old", 1.0)}
    after = {100: ThreadTime("python", 6.5), 101: ThreadTime("model", 13.0), 102: ThreadTime("rdk:broker1", 1.25),
             103: ThreadTime("rdk:main", 0.75), 104: ThreadTime("publish", 2.5),
             105: ThreadTime("reused", 0.25),  # the tid of an ended thread, reused by a new one
             106: ThreadTime("model", 0.5)}  # born between the snapshots: an OpenMP helper of the model thread
    used = thread_cpu.seconds_by_role(pid, before, after)
    assert used == pytest.approx({MAIN_THREAD: 1.5, "model": 3.5, LIBRDKAFKA: 0.5, "publish": 0.5, "reused": 0.25})
    assert thread_cpu.microseconds_per_event(used, 1000)["model"] == pytest.approx(3500.0)


def test_the_threads_of_this_process_are_read_from_proc():
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: stop.wait(5), daemon=True)
    spinner.start()
    try:
        threads = thread_cpu.read_threads(os.getpid())
    finally:
        stop.set()
    assert os.getpid() in threads and spinner.native_id in threads
    assert all(t.seconds >= 0 for t in threads.values())
    assert thread_cpu.thread_role(os.getpid(), os.getpid(), threads[os.getpid()].name) == MAIN_THREAD


def make_round(worker_seconds, parts, cpu=None, events=1000):
    return HostRound(events=events, parts=parts, worker_seconds=worker_seconds, worker_cpu=cpu or {})


def test_the_ratio_is_the_worker_over_the_slowest_part_of_its_own_round():
    fast = make_round(0.5, {PASS_THROUGH: 100_000, TOKENIZER: 4000, MODEL: 3000})  # worker 2000/s
    slow = make_round(1.0, {PASS_THROUGH: 90_000, TOKENIZER: 1500, MODEL: 2500})  # worker 1000/s
    assert fast.slowest_part() == (MODEL, 3000)
    assert fast.ratio == pytest.approx(2000 / 3000)
    assert slow.slowest_part() == (TOKENIZER, 1500)
    third = make_round(4.0, {PASS_THROUGH: 1, TOKENIZER: 1000, MODEL: 1000})  # the pass-through is the slowest
    assert third.ratio == pytest.approx(250.0)
    assert host_report.median_ratio([fast, slow, third]) == pytest.approx(1000 / 1500)
    assert host_report.median_rates([fast, slow, third])[TOKENIZER] == 1500


@pytest.mark.parametrize(("ratio", "met"), [(0.19, False), (0.6499, False), (0.65, True), (1.2, True)])
def test_the_target_is_0_65_of_the_slowest_part_and_fails_the_run_only_with_check(ratio, met):
    assert host_report.target_met(ratio) is met
    assert host_report.exit_code(ratio, check=True) == (0 if met else 1)
    assert host_report.exit_code(ratio, check=False) == 0


def test_cpu_per_event_is_the_median_over_rounds_busiest_first_and_zero_where_a_thread_did_not_run():
    rounds = [make_round(1, {MODEL: 1}, {"model": 0.010, MAIN_THREAD: 0.200}),
              make_round(1, {MODEL: 1}, {"model": 0.030, MAIN_THREAD: 0.100, "publish": 0.050}),
              make_round(1, {MODEL: 1}, {"model": 0.020, MAIN_THREAD: 0.150, "publish": 0.070})]
    per_event = host_report.cpu_per_event(rounds)
    assert list(per_event) == [MAIN_THREAD, "publish", "model"]
    assert per_event == pytest.approx({MAIN_THREAD: 150.0, "publish": 50.0, "model": 20.0})


def sample_run(ratio_worker_seconds=1.0):
    parts = {PASS_THROUGH: 200_000.0, TOKENIZER: 20_000.0, MODEL: 18_000.0}
    cpu = {MAIN_THREAD: 2.0, "model": 1.0, "publish": 1.5, LIBRDKAFKA: 0.2, "http": 0.0}
    rounds = [HostRound(30_000, parts, ratio_worker_seconds, cpu, broker_cpu=0.6, bench_cpu=0.4)]
    machine = {"date": "2026-12-03 08:00 UTC", "cpu": "AMD EPYC", "cores": "2 usable (2 online)", "memory": "23.5 GiB",
               "python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "librdkafka": "2.16.0",
               "device": "cpu", "code": "abc1234"}
    settings = {"model": "near-free", "model_batch": 256, "broker": "local", "batch.max_size": 256}
    dataset = {"events": 30_000, "words_median": 16, "words_mean": 37.1, "tokens_mean": 41.7}
    return HostRun("python bench/host_capacity.py", False, machine, settings, dataset, rounds)


def test_the_section_states_rates_ratio_verdict_and_cpu_by_thread():
    slow_worker = host_report.render_section(sample_run(ratio_worker_seconds=10.0))  # 3,000/s: 0.17x
    assert slow_worker.startswith(HOST_CAPACITY.start) and slow_worker.rstrip().endswith(HOST_CAPACITY.end)
    assert "| **the worker**, end to end | **3,000** |" in slow_worker
    assert "median **0.17×**" in slow_worker and "**FAIL**" in slow_worker
    assert "| poll loop (main thread) | 66.7 | 43% |" in slow_worker  # 2.0 s of 4.7 s over 30,000 events
    assert "`http`" not in slow_worker  # no CPU: left out
    assert "http" not in host_report.console_summary(sample_run(ratio_worker_seconds=10.0))
    assert "| _beside it: the local broker (same cores)_ | 20.0 |" in slow_worker
    assert "**pass**" in host_report.render_section(sample_run(ratio_worker_seconds=2.0))  # 15,000/s: 0.83x


def test_the_section_is_replaced_in_place_and_kept_when_bench_run_rewrites_the_report():
    first, second = host_report.render_section(sample_run(10.0)), host_report.render_section(sample_run(2.0))
    assert HOST_CAPACITY.find(first) == first  # the section is exactly what its markers enclose
    document = "# Benchmarks\n\nintro\n"
    once = HOST_CAPACITY.splice(document, first)
    assert once.startswith(document) and once.endswith(first)
    middle = once.replace(first, first + "\n## Later section\n")
    twice = HOST_CAPACITY.splice(middle, second)
    assert first not in twice and second in twice and twice.endswith("## Later section\n")
    assert twice.count(HOST_CAPACITY.start) == 1
    rewritten = "# Benchmarks\n\nnew figures\n"
    kept = HOST_CAPACITY.carry_over(twice, rewritten)
    assert kept.startswith(rewritten) and second in kept
    assert HOST_CAPACITY.splice("", first) == first  # a new file holds the section alone
    assert HOST_CAPACITY.carry_over(None, rewritten) == rewritten
    assert HOST_CAPACITY.carry_over("no section here", rewritten) == rewritten


def test_quick_sizes_write_no_file_unless_asked():
    quick = host_capacity.parse_args(["--quick"])
    assert (quick.events, quick.rounds, quick.out, quick.check) == (8000, 2, None, False)
    full = host_capacity.parse_args(["--check"])
    assert (full.events, full.rounds, full.out, full.check) == (30_000, 5, host_capacity.DEFAULT_OUT, True)
    # A GPU's model thread is one thread of host work; float32 spares the CPU model oneDNN's kernel
    # builds per batch shape, which bfloat16 pays and the host path does not cause.
    assert (full.model_threads, full.model_dtype) == (1, "float32")
    assert (quick.host_path_runs, full.host_path_runs) == (1, 3)
    assert host_capacity.parse_args(["--host-path-runs", "0"]).host_path_runs == 0
    assert host_capacity.parse_args(["--model-threads", "0"]).model_threads == 0


def test_forward_passes_are_read_from_metric_deltas_and_reported_per_event_next_to_the_model_alone():
    before = {"batched_events_count": 10, "batched_events": 1000, "padded_tokens": 50_000, "model_s": 1.0}
    after = {"batched_events_count": 130, "batched_events": 31_000, "padded_tokens": 1_550_000, "model_s": 4.0}
    worker = host_capacity.pass_figures(before, after)
    assert worker == {"passes": 120, "events": 30_000, "padded_tokens": 1_500_000, "model_s": 3.0}
    alone = {"passes": 118, "events": 30_000, "padded_tokens": 1_230_000, "model_s": 2.4}
    round_ = HostRound(30_000, {MODEL: 12_500}, 5.0, {}, worker_passes=worker, alone_passes=alone)
    run = HostRun("cmd", False, {}, {}, {}, rounds=[round_])
    assert host_report.pass_rows(run) == [
        ["the worker's", "250", "50.0", "100.0"],
        ["the model alone's", "254", "41.0", "80.0"],
    ]
    # Rounds without metrics (no /metrics endpoint) leave the table out.
    bare = HostRun("cmd", False, {}, {}, {}, rounds=[HostRound(30_000, {MODEL: 12_500}, 5.0, {})])
    assert host_report.pass_rows(bare) == []


def test_the_host_path_sums_the_stages_under_the_interpreter_lock_and_states_one_interpreters_ceiling():
    from bench.host_path import HostPath

    seconds = {"intake": 0.05, "tokenizer": 0.6, "batcher": 0.02,  # 10,000 events: 5, 60 and 2 µs each
               "model stage@32": 0.01, "publish@32": 0.12, "model stage@384": 0.01, "publish@384": 0.2}
    slower = {stage: value * 2 for stage, value in seconds.items()}
    path = HostPath(10_000, widths={32: "near-free model", 384: "MiniLM"}, repetitions=[seconds, slower, seconds])
    assert path.stage_us(384) == pytest.approx(
        {"intake": 5.0, "tokenizer": 60.0, "batcher": 2.0, "model stage": 1.0, "publish": 20.0})
    assert path.locked_us(32) == pytest.approx(5 + 2 + 1 + 12)  # the tokenizer's Rust runs outside the lock
    assert path.ceiling(384) == pytest.approx(1e6 / 28)
    lines = "\n".join(host_report.host_path_lines(path))
    assert "| **under the interpreter lock** (all but the tokenizer) | **20.0** | **28.0** |" in lines
    assert "| one interpreter's ceiling, events/s (1 / the above) | 50,000 | 35,714 |" in lines
    assert "width 384 (MiniLM)" in lines and "medians of 3 runs" in lines
    run = sample_run(10.0)
    assert "stage by stage" not in host_report.render_section(run)
    run.host_path = path
    assert lines in host_report.render_section(run)
