"""docs/benchmarks.md has three writers: bench/run.py, bench/host_capacity.py's section, and the
hand-kept "Tried and measured". A run of either benchmark leaves the others' sections as it found them."""

from pathlib import Path

from bench.gpu import combine
from bench.report import TRIED_PLACEHOLDER
from bench.sections import HOST_CAPACITY, TRIED_AND_MEASURED

DOCS = Path(__file__).resolve().parents[2] / "docs"


def generated(figures: str) -> str:
    """What bench/run.py renders: its figures, then the placeholder where "Tried and measured" goes."""
    return f"# Benchmarks\n\n{figures}\n\n## Worker settings used\n\n```\nX=1\n```\n\n{TRIED_PLACEHOLDER}"


def carried(previous: str | None, new: str) -> str:
    for section in (TRIED_AND_MEASURED, HOST_CAPACITY):  # as bench/run.py writes its file
        new = section.carry_over(previous, new)
    return new


def test_a_rerun_keeps_the_hand_kept_notes_in_their_place_and_the_host_section_after_them():
    notes = TRIED_AND_MEASURED.wrap("## Tried and measured\n\n- a thing tried by hand\n")
    host = HOST_CAPACITY.wrap("## Host capacity\n\nold figures\n")
    previous = generated("figures of the last run").replace(TRIED_PLACEHOLDER, notes) + "\n" + host
    rewritten = carried(previous, generated("figures of this run"))
    assert "figures of this run" in rewritten and "figures of the last run" not in rewritten
    assert "a thing tried by hand" in rewritten and "kept by hand." not in rewritten  # the placeholder is replaced
    assert rewritten.index("a thing tried by hand") < rewritten.index("old figures")
    assert rewritten.count(TRIED_AND_MEASURED.start) == 1 and rewritten.count(HOST_CAPACITY.start) == 1
    assert carried(rewritten, generated("figures of this run")) == rewritten  # a second run changes nothing else


def test_a_report_written_anywhere_else_points_to_the_notes_instead():
    fresh = carried(None, generated("gpu figures"))
    assert TRIED_AND_MEASURED.find(fresh) == TRIED_PLACEHOLDER
    assert "[docs/benchmarks.md](benchmarks.md#tried-and-measured)" in fresh


def test_the_repository_report_holds_the_notes_between_their_markers():
    report = (DOCS / "benchmarks.md").read_text()
    notes = TRIED_AND_MEASURED.find(report)
    assert notes is not None and "### Kept in the worker" in notes and "### Tried and left out" in notes
    assert HOST_CAPACITY.find(report) is not None
    assert report.index(TRIED_AND_MEASURED.end) < report.index(HOST_CAPACITY.start)


def test_the_gpu_document_carries_the_pointer_once():
    minilm = generated("minilm figures") + "\n" + HOST_CAPACITY.wrap("## Host capacity\n\nfigures\n")
    bert = generated("bert figures")
    both = combine.combine(minilm, bert)
    assert both.count("## Tried and measured") == 1 and both.count(TRIED_AND_MEASURED.start) == 1
    assert both.count(TRIED_AND_MEASURED.end) == 1
    assert "minilm figures" in both and "bert figures" in both and "## BERT-base-shaped classifier" in both
