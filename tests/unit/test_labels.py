"""Labels files (thresholds, fallback, versions) and their live reload, without a model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from worker.label_reload import LabelsReloader
from worker.labels import (
    DEFAULT_LABELS_FILE,
    LabelsDefinition,
    LabelsFileError,
    file_label_set,
    load_labels_file,
    parse_labels_file,
)

GOOD = """
fallback: unsure
labels:
  - name: spam
    description: Unsolicited advertising
    examples: ["Buy now", "Click here"]
    threshold: 0.4
  - name: billing
    examples: ["Why was I charged twice?"]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_labels_file_names_labels_texts_thresholds_and_a_fallback(tmp_path):
    definition = load_labels_file(write(tmp_path / "labels.yaml", GOOD))
    assert definition.names == ["spam", "billing"]
    assert definition.labels[0].texts == ("Unsolicited advertising", "Buy now", "Click here")
    assert [spec.threshold for spec in definition.labels] == [0.4, None]
    assert definition.fallback == "unsure"
    assert len(load_labels_file(DEFAULT_LABELS_FILE).names) >= 5


def test_the_version_follows_the_content_not_the_layout(tmp_path):
    version = parse_labels_file(GOOD.encode(), "a").version
    assert len(version) == 12 and int(version, 16) >= 0
    relaid = (
        '{"labels": [{"name": "spam", "threshold": 0.4, "examples": ["Buy now", "Click here"],'
        ' "description": "Unsolicited advertising"}, {"name": "billing", "examples": ["Why was I charged twice?"]}],'
        ' "fallback": "unsure"}'
    )
    assert parse_labels_file(relaid.encode(), "b").version == version  # JSON, keys reordered: same labels
    for changed in (
        GOOD.replace("0.4", "0.5"),
        GOOD.replace("unsure", "other"),
        GOOD.replace("Click here", "Click there"),
        GOOD.replace("name: billing", "name: invoices"),
        GOOD + "  - name: praise\n    examples: [thanks]\n",
    ):
        assert parse_labels_file(changed.encode(), "c").version != version, changed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("labels: [\n", "not valid YAML"),
        ("labels: []\n", "non-empty list under `labels:`"),
        ("- a\n- b\n", "expected a mapping"),
        ("labels:\n  - name: a\n    examples: [x]\nfalback: b\n", "unknown field(s) falback"),
        ("labels:\n  - name: a\n    exampels: [x]\n", "label 'a': unknown field(s) exampels"),
        ("labels:\n  - name: a\n    examples: [x]\n    threshold: 1.5\n", "`threshold` must be a number from 0.0 to 1.0"),
        ("labels:\n  - name: a\n    examples: [x]\n    threshold: high\n", "`threshold` must be a number"),
        ("labels:\n  - name: a\n    examples: [x]\nfallback: ''\n", "`fallback` must be a label name"),
        ("labels:\n  - name: a\n    examples: [x]\n  - name: a\n    examples: [y]\n", "repeated: a"),
        ("labels:\n  - name: a\n", "needs a description or examples"),
        ("labels:\n  - examples: [x]\n", "label #1 needs a `name`"),
    ],
)
def test_a_bad_labels_file_is_refused_with_the_file_and_the_reason(tmp_path, text, reason):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(LabelsFileError) as error:
        load_labels_file(path)
    assert str(error.value).startswith(f"{path}: ") and reason in str(error.value)


def test_winners_apply_each_labels_threshold_in_one_pass():
    label_set = file_label_set(parse_labels_file(GOOD.encode(), "x"), matrix=None)
    best = np.array([0, 0, 1, 1])
    scores = np.array([0.39, 0.4, -0.2, 0.9], dtype=np.float32)
    assert label_set.winners(best, scores).tolist() == ["unsure", "spam", "billing", "billing"]


# Live reload --------------------------------------------------------------------------------


class RecordingMetrics:
    def __init__(self) -> None:
        self.reloads: list[str] = []
        self.active: dict = {}
        self.labels_reloads = self

    def add(self, value: int, attributes: dict) -> None:
        self.reloads.append(attributes["result"])

    def replace_gauge(self, short: str, values: dict) -> None:
        assert short == "labels.active"
        self.active = {dict(key)["labels_version"]: value for key, value in values.items()}


class Embedder:
    """Stands in for the model: records what it was asked to embed."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, definition: LabelsDefinition):
        self.calls.append(definition.names)
        if self.fail:
            raise RuntimeError("out of memory")
        return file_label_set(definition, matrix=np.zeros((len(definition.labels), 4)))


def reloader_for(path: Path, embed=None, interval_s: float = 5.0):
    metrics = RecordingMetrics()
    current = file_label_set(load_labels_file(path), matrix=None)
    return LabelsReloader(path, interval_s, current, embed or Embedder(), metrics, now=100.0), metrics


def replace_atomically(path: Path, text: str) -> None:
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_an_atomically_replaced_file_is_embedded_at_the_next_check_only(tmp_path):
    path = write(tmp_path / "labels.yaml", GOOD)
    embed = Embedder()
    reloader, metrics = reloader_for(path, embed)
    first = reloader.label_set(100.0)
    assert metrics.active == {first.version: 2}
    replace_atomically(path, GOOD + "  - name: shipping\n    examples: [where is my parcel]\n")
    assert reloader.label_set(104.9) is first  # not due yet: the file is not even read
    assert embed.calls == []
    new = reloader.label_set(105.0)
    assert new.names == ("spam", "billing", "shipping") and new.version != first.version
    assert embed.calls == [["spam", "billing", "shipping"]] and metrics.reloads == ["ok"]
    assert metrics.active == {new.version: 3}
    assert reloader.label_set(110.0) is new and len(embed.calls) == 1  # unchanged content: no new embedding


def test_a_configmap_style_symlink_swap_is_seen(tmp_path):
    """Kubernetes mounts a ConfigMap key as labels.yaml -> ..data/labels.yaml, ..data -> ..<timestamp>,
    and updates it by pointing ..data at a new directory in one rename."""
    for name, text in (("..v1", GOOD), ("..v2", GOOD.replace("0.4", "0.7"))):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "labels.yaml", text)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "labels.yaml").symlink_to("..data/labels.yaml")
    reloader, metrics = reloader_for(tmp_path / "labels.yaml")
    first = reloader.label_set(200.0)
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    new = reloader.label_set(205.0)
    assert new.version != first.version and new.thresholds[0] == pytest.approx(0.7)
    assert metrics.reloads == ["ok"]


def test_a_relaid_file_with_the_same_labels_is_not_embedded_again(tmp_path):
    path = write(tmp_path / "labels.yaml", GOOD)
    embed = Embedder()
    reloader, metrics = reloader_for(path, embed)
    replace_atomically(path, "# a comment\n" + GOOD)
    first = reloader.label_set(105.0)
    assert reloader.label_set(110.0) is first and embed.calls == [] and metrics.reloads == []


@pytest.mark.parametrize(
    "broken", ["labels: [\n", "labels: []\n", GOOD + "colour: blue\n", None], ids=["yaml", "empty", "unknown", "gone"]
)
def test_a_broken_replacement_keeps_the_labels_in_use_logs_and_counts_it_once(tmp_path, caplog, broken):
    path = write(tmp_path / "labels.yaml", GOOD)
    embed = Embedder()
    reloader, metrics = reloader_for(path, embed)
    first = reloader.label_set(100.0)
    if broken is None:
        path.unlink()
    else:
        replace_atomically(path, broken)
    with caplog.at_level(logging.ERROR, logger="worker.label_reload"):
        assert reloader.label_set(105.0) is first
        assert reloader.label_set(110.0) is first  # the same broken content: reported once
    assert embed.calls == [] and metrics.reloads == ["failed"]
    (record,) = caplog.records
    assert record.file == str(path) and str(path) in record.getMessage()
    assert record.error and record.labels_version == first.version
    replace_atomically(path, GOOD.replace("Buy now", "Buy it now"))  # fixed: taken at the next check
    assert reloader.label_set(115.0).version != first.version
    assert metrics.reloads == ["failed", "ok"]


def test_a_failed_embedding_keeps_the_labels_in_use(tmp_path, caplog):
    path = write(tmp_path / "labels.yaml", GOOD)
    reloader, metrics = reloader_for(path, Embedder(fail=True))
    first = reloader.label_set(100.0)
    replace_atomically(path, GOOD.replace("0.4", "0.3"))
    with caplog.at_level(logging.ERROR, logger="worker.label_reload"):
        assert reloader.label_set(105.0) is first
    assert "out of memory" in caplog.records[0].error and metrics.reloads == ["failed"]
