"""py-spy on the benchmark's worker while it works: one `dump`, then a `record --gil` in raw form.

    python bench/gpu/spy.py --marker NAME=VALUE --out FILE [--seconds 20] [--py-spy PATH] [--wait 600]

Waits for the first `python -m worker run` whose environment holds NAME=VALUE (run_on_device.sh
exports a marker per benchmark, so this finds that benchmark's first worker: bench/run.py's
throughput worker), then for its /metrics to show events being consumed (under load, not warming up), then writes to
FILE: the worker's consumed count, `py-spy dump` (every thread's stack at that moment), and two
records taken at once for --seconds, `py-spy record --gil --threads --nonblocking -f raw` (only
samples of the thread holding the interpreter lock: who holds it, and where) and the same without
--gil (every active thread); --nonblocking does not pause the worker. Each raw line is
`thread (TID);frame;frame... COUNT`, heaviest first; fold it with flamegraph.pl. The dump names
the threads (TID -> name: poll loop "MainThread", "model", "publish", ...).
Exits 0 without writing a profile when no worker came under load in time (it says so in FILE).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

CONSUMED = re.compile(r"^encoder_worker_events_consumed_total\{[^}]*\}\s+([0-9.eE+]+)$|^encoder_worker_events_consumed_total\s+([0-9.eE+]+)$",
                      re.MULTILINE)


def find_worker(marker: str, deadline: float) -> psutil.Process | None:
    name, _, value = marker.partition("=")
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if (process.info["cmdline"] or [])[1:4] != ["-m", "worker", "run"]:
                continue
            try:
                if process.environ().get(name) == value:
                    return process
            except psutil.Error:
                continue
        time.sleep(0.2)
    return None


def consumed(port: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(a or b) for a, b in CONSUMED.findall(text))


def wait_for_load(worker: psutil.Process, port: str, deadline: float) -> float | None:
    """The consumed count once it grows between two reads 0.1 s apart (None: never, or the worker went)."""
    last = None
    while time.monotonic() < deadline and worker.is_running():
        now = consumed(port)
        if now is not None and last is not None and now > last:
            return now
        last = now
        time.sleep(0.1)
    return None


def write_raw(out, raw: Path, title: str) -> None:  # type: ignore[no-untyped-def]
    """The raw record's stacks, heaviest first (the last field of a line is its sample count)."""
    if not raw.is_file():
        out.write(f"--- {title}: no file ---\n")
        return

    def count(line: str) -> int:
        last = line.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    lines = sorted(raw.read_text().splitlines(), key=count, reverse=True)
    out.write(f"--- {title}; raw, {len(lines)} distinct stacks, {sum(map(count, lines))} samples, heaviest first ---\n")
    out.write("\n".join(lines) + "\n")
    raw.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marker", required=True, help="NAME=VALUE in the worker's environment")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--wait", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    with args.out.open("a") as out:
        def note(text: str) -> None:
            out.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
            out.flush()

        worker = find_worker(args.marker, deadline)
        if worker is None:
            note(f"no `python -m worker run` with {args.marker} in its environment appeared")
            return 0
        port = worker.environ().get("WORKER_HTTP__PORT", "")
        note(f"worker pid {worker.pid}, metrics port {port}; waiting for load")
        before = wait_for_load(worker, port, deadline)
        if before is None:
            note("the worker never came under load (or exited) before the deadline")
            return 0
        note(f"under load: {before:.0f} events consumed so far")
        note(f"$ {args.py_spy} dump --pid {worker.pid}")
        dump = subprocess.run([args.py_spy, "dump", "--pid", str(worker.pid)], capture_output=True, text=True, timeout=60)
        out.write(dump.stdout + dump.stderr + "\n")
        # Two records at once over the same seconds: --gil (who holds the interpreter lock) and
        # every active thread (what each one does, in Python or waiting in native code).
        records = []
        for label, extra in (("gil", ["--gil"]), ("active", [])):
            raw = Path(tempfile.gettempdir()) / f"{args.out.name}.{label}.raw"
            command = [args.py_spy, "record", *extra, "--threads", "--nonblocking", "-f", "raw", "-r", str(args.rate),
                       "-d", str(int(args.seconds)), "-p", str(worker.pid), "-o", str(raw)]
            note("$ " + " ".join(command))
            records.append((label, raw, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        for label, raw, process in records:
            output, _ = process.communicate(timeout=args.seconds + 60)
            out.write(output)
            note(f"record {label}: py-spy exit code {process.returncode}")
        after = consumed(port)
        note(f"after the records: {after if after is None else f'{after:.0f}'} events consumed")
        for label, raw, _ in records:
            write_raw(out, raw, "py-spy record --gil: samples of the thread holding the GIL" if label == "gil"
                      else "py-spy record: samples of every active (not idle) thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
