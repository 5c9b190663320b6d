import re

from tests.support.docs import BLOCKS, README, render


def test_readme_tables_match_the_code():
    text = README.read_text()
    for name in BLOCKS:
        assert f"<!-- {name}:start -->" in text, f"README lacks the {name} table"
    assert render(text) == text, "README tables are stale: run `python -m tests.support.docs`"


def test_sizing_figures_are_those_of_the_recorded_benchmark():
    """README and deployment guide quote docs/benchmarks.md; a new bench run must update both."""
    root = README.parent
    report = (root / "docs" / "benchmarks.md").read_text()
    throughput_row = r"^\| \*\*this worker\*\*, end to end \| \*\*([\d.]+)\*\* \|[^|]*\| \*\*([\d.]+)\*\*"
    memory_target_row = r"^\| Peak RSS with [\d,]+ events queued \|[^|]*\| [\d.]+× \((\d+) / (\d+) MiB\)"
    rate, ratio = re.search(throughput_row, report, re.M).groups()
    peak, idle = re.search(memory_target_row, report, re.M).groups()
    readme = " ".join(README.read_text().split())
    deployment = " ".join((root / "docs" / "deployment.md").read_text().split())
    assert f"{rate} events/s end to end, {ratio}× the model alone, peaking at {peak} MiB" in readme
    assert f"a replica ran {rate} events/s end to end in the recorded run, {ratio}× the model alone" in deployment
    assert f"A replica used {idle} MiB idle and peaked at {peak} MiB" in deployment
    # Reports from runs where the worker's precision is not float32 also give the float32 model
    # alone (a cell after "× model alone"): the README must then quote the worker's gain over it.
    float32_cell = re.search(throughput_row + r" \| \*\*([\d.]+)\*\*", report, re.M)
    if float32_cell:
        assert f"{float32_cell.group(3)}× the float32 model alone" in readme
