"""`encoder-worker classify` and `encoder-worker evaluate` run as a user runs them: the console
entry point in a subprocess, the packaged MiniLM, real files, stdin and stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.kafka_support import REPO
from worker.labels import parse_labels_file
from worker.records import LabelsRecord

LABELS = """
fallback: unsure
labels:
  - name: shipping
    description: A customer asking where a parcel is, or saying a delivery is late or lost.
    examples: ["Where is my parcel? It still has not arrived", "My package tracking has not moved in a week"]
  - name: billing question
    description: A customer asking about a charge, an invoice, a refund or a payment.
    examples: ["Why was I charged twice this month?", "How do I get a refund for my last order?"]
  - name: praise
    description: Compliments and thanks about a product or a service.
    examples: ["Thank you so much, your support team was amazing!"]
    threshold: 0.95
"""
EXAMPLES = [
    ("My parcel never arrived, where is it?", "shipping"),
    ("The delivery of my package is a week late", "shipping"),
    ("I was charged twice for one order", "billing question"),
    ("Can I get a refund please?", "billing question"),
    ("Thanks, your team was wonderful", "praise"),
    ("What time is it in Tokyo?", "unsure"),
]


def run_cli(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WORKER_")}
    environment.update(HF_HUB_OFFLINE="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=environment, timeout=600,
    )


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.yaml"
    path.write_text(LABELS)
    return path


def test_classify_labels_texts_given_as_arguments(labels_file):
    result = run_cli("classify", "--labels-file", str(labels_file), *(text for text, _ in EXAMPLES))
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(EXAMPLES)
    version = parse_labels_file(LABELS.encode(), "x").version
    for record, (text, expected) in zip(records, EXAMPLES[:3]):
        assert record["label"] == expected, (text, record)
    for record in records:
        assert record["labels_version"] == version and record["scoring"] == "cosine"
        assert record["score"] == record["labels"][0]["score"]
        assert [item["score"] for item in record["labels"]] == sorted((i["score"] for i in record["labels"]), reverse=True)
        # The fields of a labels record, less those that only Kafka gives (id, source, time).
        LabelsRecord.model_validate({**record, "id": "x", "source": {"topic": "t", "partition": 0, "offset": 0},
                                     "produced_at_ms": 0})
    praise = records[4]  # praise's threshold (0.95) is out of reach: the fallback, every score kept
    assert praise["labels"][0]["label"] == "praise" and praise["label"] == "unsure"


def test_classify_reads_json_or_plain_lines_from_stdin_and_stops_at_a_bad_one_with_its_line(labels_file):
    stdin = '{"id": "e1", "text": "Where is my parcel?"}\nI was charged twice\n{"id": "e3", "txt": "typo"}\nnot reached\n'
    result = run_cli("classify", "--labels-file", str(labels_file), stdin=stdin)
    assert result.returncode == 1
    assert "stdin line 3: `text` must be a non-empty string" in result.stderr
    first, second = (orjson.loads(line) for line in result.stdout.splitlines())
    assert first["id"] == "e1" and first["label"] == "shipping"
    assert "id" not in second and second["label"] == "billing question"


@pytest.mark.parametrize(
    ("content", "reason"),
    [("labels:\n  - name: a\n    examples: [x]\n    treshold: 0.5\n", "unknown field(s) treshold"), ("labels: [", "not valid YAML")],
)
def test_a_bad_labels_file_is_refused_before_the_model_loads(tmp_path, content, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    data = write_examples(tmp_path / "data.jsonl", EXAMPLES)
    for args in (["classify", "hello"], ["evaluate", str(data)]):
        result = run_cli(*args, "--labels-file", str(path))
        assert result.returncode == 2 and result.stdout == ""
        assert f"invalid --labels-file: {path}: " in result.stderr and reason in result.stderr
    result = run_cli("classify", "hello", WORKER_MODEL__LABELS_FILE=str(path))
    assert result.returncode == 2 and "invalid WORKER_MODEL__LABELS_FILE" in result.stderr


def write_examples(path: Path, examples) -> Path:
    path.write_text("".join(orjson.dumps({"text": text, "label": label}).decode() + "\n" for text, label in examples))
    return path


def test_evaluate_reports_what_classify_gives_on_the_same_texts(labels_file, tmp_path):
    data = write_examples(tmp_path / "data.jsonl", EXAMPLES)
    result = run_cli("evaluate", "--labels-file", str(labels_file), "--json", str(data))
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    given = [orjson.loads(line)["label"] for line in run_cli(
        "classify", "--labels-file", str(labels_file), *(text for text, _ in EXAMPLES)).stdout.splitlines()]
    truth = [label for _, label in EXAMPLES]
    assert report["examples"] == len(EXAMPLES)
    assert report["correct"] == sum(g == t for g, t in zip(given, truth))
    assert report["labels_version"] == parse_labels_file(LABELS.encode(), "x").version
    rows = {row["label"]: row for row in report["labels"]}
    assert set(rows) == {"shipping", "billing question", "praise", "unsure"} and rows["unsure"]["fallback"]
    for name, row in rows.items():
        hits = sum(g == t == name for g, t in zip(given, truth))
        assert row["support"] == truth.count(name) and row["predicted"] == given.count(name)
        assert row["recall"] == pytest.approx(hits / truth.count(name))
    # praise scores under its 0.95 threshold: lowering it would find the praise example again.
    assert rows["praise"]["threshold"] == pytest.approx(0.95) and rows["praise"]["recall"] == 0.0
    assert rows["praise"]["best_threshold"] < 0.95 and rows["praise"]["best_f1"] > 0
    assert {"true": "praise", "predicted": "unsure", "count": 1} in report["confusions"]

    text = run_cli("evaluate", "--labels-file", str(labels_file), str(data))
    assert text.returncode == 0, text.stderr
    assert f"labels: {labels_file}" in text.stdout and "best threshold" in text.stdout
    assert "praise -> unsure" in text.stdout
    assert all(any(line.startswith(name) for line in text.stdout.splitlines()) for name in rows)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"text": "hello"', "not valid JSON"),
        ('["hello", "spam"]', "expected a JSON object"),
        ('{"text": "hello"}', "`label` must be a non-empty string"),
        ('{"text": "", "label": "spam"}', "`text` must be a non-empty string"),
    ],
)
def test_evaluate_names_the_line_of_malformed_data(labels_file, tmp_path, line, reason):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": "b"}\n\n' + line + "\n")
    result = run_cli("evaluate", "--labels-file", str(labels_file), str(data))
    assert result.returncode == 1 and result.stdout == ""
    assert f"{data} line 3: {reason}" in result.stderr


def test_evaluate_refuses_a_missing_or_empty_data_file(labels_file, tmp_path):
    missing = run_cli("evaluate", "--labels-file", str(labels_file), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "nope.jsonl: No such file or directory" in missing.stderr
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = run_cli("evaluate", "--labels-file", str(labels_file), str(tmp_path / "empty.jsonl"))
    assert empty.returncode == 1 and "no examples" in empty.stderr
