import json

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from worker.labels import LabelsDefinition, LabelSpec, file_label_set, head_label_set
from worker.outputs import OutputSerializer, SourceCoordinates, decode_vector, dead_letter_headers
from worker.records import EmbeddingsRecord, InputEvent, LabelsRecord
from worker.schemas import render_schemas
from worker.settings import EmbeddingEncoding

SOURCE = SourceCoordinates("events", 2, 41, 1_700_000_000_000)


LABEL_SET = head_label_set(["ham", "spam", "toxic"])


def serializer(encoding=EmbeddingEncoding.JSON, top_k=2):
    return OutputSerializer("tiny", "softmax", top_k, encoding, True)


def labels_record(s, scores, label_set=LABEL_SET, now_ms=123):
    """Render each row the way the publisher does: top-k and winners per window, then per event."""
    winners, names, values = s.label_columns(np.asarray(scores, dtype=np.float32), label_set)
    return [
        orjson.loads(s.labels_value(f"e{n}", label_set, winners[n], names[n], values[n], SOURCE.as_dict(), now_ms))
        for n in range(len(winners))
    ]


def test_top_labels_are_the_best_k_best_first():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], dtype=np.float32)
    indices, values = serializer().top_labels(scores)
    assert indices.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(values, [[0.7, 0.2], [0.5, 0.4]])


def test_top_k_larger_than_the_label_count_gives_all_labels():
    indices, _ = serializer(top_k=10).top_labels(np.array([[0.2, 0.3, 0.5]], dtype=np.float32))
    assert indices.tolist() == [[2, 1, 0]]


def test_labels_value_follows_the_contract():
    (record,) = labels_record(serializer(), [[0.1, 0.7, 0.2]])
    parsed = LabelsRecord.model_validate(record)
    assert parsed.label == "spam" and parsed.score == pytest.approx(0.7)
    assert [item.label for item in parsed.labels] == ["spam", "toxic"]
    assert parsed.labels_version == LABEL_SET.version and len(parsed.labels_version) == 12
    assert parsed.source.offset == 41 and parsed.source.timestamp_ms == 1_700_000_000_000
    assert parsed.produced_at_ms == 123


def test_best_label_under_its_threshold_gives_the_fallback_and_keeps_every_score():
    definition = LabelsDefinition(
        (LabelSpec("spam", ("x",), threshold=0.6), LabelSpec("billing", ("y",)), LabelSpec("abuse", ("z",), 0.3)),
        fallback="unsure",
    )
    label_set = file_label_set(definition, matrix=None)
    scores = [
        [0.55, 0.20, 0.10],  # spam best but under 0.6: fallback
        [0.65, 0.20, 0.10],  # spam at or over its threshold
        [0.10, 0.15, 0.12],  # billing has no threshold: always itself
        [0.10, 0.05, 0.30],  # exactly at abuse's threshold: abuse
        [0.10, 0.05, 0.29],  # just under: fallback
    ]
    records = labels_record(serializer(top_k=3), scores, label_set)
    assert [r["label"] for r in records] == ["unsure", "spam", "billing", "abuse", "unsure"]
    assert records[0]["score"] == pytest.approx(0.55)
    assert [item["label"] for item in records[0]["labels"]] == ["spam", "billing", "abuse"]
    assert all(r["labels_version"] == definition.version for r in records)
    for record in records:
        LabelsRecord.model_validate(record)

    no_fallback = file_label_set(LabelsDefinition(definition.labels), matrix=None)
    records = labels_record(serializer(), scores[:2], no_fallback)
    assert [r["label"] for r in records] == [None, "spam"]
    assert no_fallback.version != label_set.version  # the fallback is part of the label set


@pytest.mark.parametrize("encoding", list(EmbeddingEncoding))
def test_embeddings_value_round_trips_in_every_encoding(encoding):
    vector = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    record = orjson.loads(serializer(encoding).embeddings_value("e1", vector, SOURCE.as_dict(), 5))
    parsed = EmbeddingsRecord.model_validate(record)
    assert parsed.dim == 16 and parsed.encoding == encoding.value
    tolerance = 1e-3 if encoding is EmbeddingEncoding.BASE64_F16 else 1e-7
    np.testing.assert_allclose(decode_vector(record), vector, rtol=tolerance, atol=tolerance)


def test_outputs_validate_against_the_published_json_schemas():
    schemas = {name: json.loads(content) for name, content in render_schemas().items()}
    s = serializer()
    (labels,) = labels_record(s, [[0.3, 0.3, 0.4]])
    (null_label,) = labels_record(s, [[0.3, 0.3, 0.4]], file_label_set(
        LabelsDefinition((LabelSpec("a", ("x",), 0.9), LabelSpec("b", ("y",)), LabelSpec("c", ("z",), 0.5))), None
    ))
    assert null_label["label"] is None
    Draft202012Validator(schemas["labels-record.schema.json"]).validate(null_label)
    embeddings = orjson.loads(s.embeddings_value("e", np.ones(4, dtype=np.float32), SOURCE.as_dict(), 1))
    Draft202012Validator(schemas["labels-record.schema.json"]).validate(labels)
    Draft202012Validator(schemas["embeddings-record.schema.json"]).validate(embeddings)
    Draft202012Validator(schemas["input-event.schema.json"]).validate({"id": "x", "text": "hi", "metadata": {}})
    assert not Draft202012Validator(schemas["input-event.schema.json"]).is_valid({"text": ""})


def test_schema_files_match_the_models(tmp_path):
    """Other teams build against schemas/; regenerate them with `encoder-worker schemas`."""
    from pathlib import Path

    repo_schemas = Path(__file__).resolve().parents[2] / "schemas"
    for name, content in render_schemas().items():
        assert (repo_schemas / name).read_bytes() == content, f"schemas/{name} is stale: run `encoder-worker schemas`"


def test_input_model_accepts_what_the_decoder_accepts():
    InputEvent.model_validate({"text": "x", "extra": 1})
    with pytest.raises(ValueError):
        InputEvent.model_validate({"text": 5})


def test_dead_letter_headers_keep_the_originals_and_add_the_reason():
    headers = dead_letter_headers([("trace", b"abc")], "invalid_json", "bad", SOURCE, "pod-1")
    as_dict = dict(headers)
    assert headers[0] == ("trace", b"abc")
    assert as_dict["dlq.error.type"] == b"invalid_json"
    assert as_dict["dlq.source.topic"] == b"events"
    assert as_dict["dlq.source.partition"] == b"2"
    assert as_dict["dlq.source.offset"] == b"41"
    assert as_dict["dlq.source.timestamp_ms"] == b"1700000000000"
    assert as_dict["dlq.worker"] == b"pod-1"
