"""The worker process end to end, on a real broker and real (tiny or packaged) models."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict

import numpy as np
import orjson
import pytest

from tests.support.kafka_support import (
    WorkerProcess,
    committed_at_end,
    end_offsets,
    json_event,
    produce,
    read_json,
    read_messages,
    wait_until,
    worker_env,
)
from tests.support.model_support import LABELS, reference_outputs, worker_output_tolerance
from worker.outputs import decode_vector

pytestmark = pytest.mark.integration

WORDS = "the a billing refund spam great terrible account order ship love hate why how when please".split()

MALFORMED = [
    (b"\xff\xfe\xfd", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"id": "m", "body": "x"}', "missing_text"),
    (b'{"text": 12}', "text_not_string"),
    (b'{"text": "   "}', "empty_text"),
    (b'{"id": 5, "text": "x"}', "invalid_id"),
]


def mixed_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 80]) if rng.random() < 0.9 else rng.randint(100, 300)
        texts.append(" ".join(rng.choice(WORDS) for _ in range(length)))
    return texts


def test_thousands_of_events_valid_and_malformed(bootstrap, worker_topics, tiny_bert_dir):
    topics = worker_topics
    texts = mixed_texts(3000)
    records: list[tuple[bytes, bytes]] = []
    expected_reasons: dict[int, str] = {}
    for i, text in enumerate(texts):
        records.append((f"user-{i % 50}".encode(), json_event(f"e{i}", text)))
        if i % 50 == 25:
            value, reason = MALFORMED[(i // 50) % len(MALFORMED)]
            expected_reasons[len(records)] = reason
            records.append((f"user-{i % 50}".encode(), value))
    produce(bootstrap, topics["input"], records)
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap, topics, group,
        model__path=tiny_bert_dir, model__max_length=64, batch__max_size=32, batch__max_wait_ms=20,
    )
    with WorkerProcess(env) as worker:
        labels = read_json(bootstrap, topics["labels"], len(texts), timeout_s=240)
        embeddings = read_json(bootstrap, topics["embeddings"], len(texts), timeout_s=60)
        dead = read_messages(bootstrap, topics["dead_letter"], len(expected_reasons), timeout_s=60)
        ends = end_offsets(bootstrap, topics["input"], len(records))
        wait_until(
            lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends),
            timeout_s=30, what="committed offsets to reach the end of the input",
        )
        assert worker.stop(signal.SIGTERM) == 0, worker.logs()[-3000:]
        logs = worker.logs()

    # Exactly one labels and one embeddings record per valid id.
    assert sorted(r["id"] for r in labels) == sorted(f"e{i}" for i in range(len(texts)))
    assert sorted(r["id"] for r in embeddings) == sorted(f"e{i}" for i in range(len(texts)))
    # Each malformed record in the dead-letter topic with its reason.
    reasons = sorted(dict(m.headers())["dlq.error.type"].decode() for m in dead)
    assert reasons == sorted(expected_reasons.values())
    assert all(dict(m.headers())["dlq.error.message"] for m in dead)

    # Outputs match plain transformers on the same texts.
    by_id = {r["id"]: r for r in labels}
    vectors = {r["id"]: decode_vector(r) for r in embeddings}
    sample = random.Random(1).sample(range(len(texts)), 300)
    probabilities, reference_vectors = reference_outputs(tiny_bert_dir, [texts[i] for i in sample], max_length=64)
    tolerance = worker_output_tolerance(logs)  # float32, or bfloat16 where the CPU computes it natively
    for row, i in enumerate(sample):
        record = by_id[f"e{i}"]
        best = int(np.argmax(probabilities[row]))
        assert record["label"] == LABELS[best]
        assert record["score"] == pytest.approx(float(probabilities[row][best]), abs=tolerance)
        assert len(record["labels"]) == 3
        np.testing.assert_allclose(vectors[f"e{i}"], reference_vectors[row], atol=tolerance)

    assert "worker stopped" in logs


def test_outputs_keep_input_order_per_key_and_carry_key_and_headers(bootstrap, worker_topics, tiny_bert_dir):
    topics = worker_topics
    texts = mixed_texts(400, seed=3)
    produce(
        bootstrap, topics["input"],
        [(f"k{i % 7}".encode(), json_event(f"o{i}", t)) for i, t in enumerate(texts)],
        headers=[("tenant", b"acme")],
    )
    env = worker_env(bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}", model__path=tiny_bert_dir,
                     model__max_length=64, batch__max_size=16, batch__sort_window=128)
    with WorkerProcess(env) as worker:
        messages = read_messages(bootstrap, topics["labels"], len(texts), timeout_s=120)
        assert worker.stop() == 0
    sequence_of: dict[bytes, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        record = orjson.loads(message.value())
        assert dict(message.headers())["tenant"] == b"acme"
        assert message.key() == f"k{int(record['id'][1:]) % 7}".encode()
        sequence_of[message.key()].append(int(record["id"][1:]))
    for key, ids in sequence_of.items():
        assert ids == sorted(ids), f"outputs for {key!r} are out of order"


def test_restarted_worker_reprocesses_nothing(bootstrap, worker_topics, tiny_bert_dir):
    topics = worker_topics
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=64)
    produce(bootstrap, topics["input"], [(None, json_event(f"r{i}", f"first run {i}")) for i in range(200)])
    with WorkerProcess(env) as worker:
        assert len(read_json(bootstrap, topics["labels"], 200, timeout_s=120)) == 200
        assert worker.stop() == 0
    first_ends = end_offsets(bootstrap, topics["input"], 200)
    assert committed_at_end(bootstrap, group, topics["input"], 3, first_ends)

    with WorkerProcess(env) as worker:
        # Keyed so that every partition gets new events (the keys hash to all three).
        produce(bootstrap, topics["input"],
                [(f"second-{i}".encode(), json_event(f"s{i}", f"second run {i}")) for i in range(20)])
        ends = end_offsets(bootstrap, topics["input"], 220)
        assert all(ends[p] > first_ends.get(p, 0) for p in range(3)), (first_ends, ends)
        read_json(bootstrap, topics["labels"], 220, timeout_s=120)
        # Offsets are committed after their outputs are delivered, so once each partition's offset
        # passes its new events, whatever was reprocessed before them is in the topic too, however
        # long that took.
        wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=60,
                   what="offsets of the second run committed")
        labels = read_json(bootstrap, topics["labels"], 10_000, timeout_s=3)
        assert worker.stop() == 0
    ids = [r["id"] for r in labels]
    assert len(ids) == 220 and len(set(ids)) == 220


def test_offsets_are_committed_as_soon_as_the_worker_catches_up(bootstrap, worker_topics, tiny_bert_dir):
    """With a commit interval of ten minutes, the offsets still follow each burst within seconds."""
    topics = worker_topics
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=64,
                     delivery__commit_interval_ms=600_000)
    with WorkerProcess(env) as worker:
        for burst in range(2):
            count = 60 * (burst + 1)
            produce(bootstrap, topics["input"], [(None, json_event(f"b{burst}-{i}", f"burst {burst} {i}")) for i in range(60)])
            ends = end_offsets(bootstrap, topics["input"], count)
            wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 3, ends), timeout_s=60,
                       what=f"offsets of burst {burst} committed")
        assert len(read_json(bootstrap, topics["labels"], 120, timeout_s=30)) == 120
        assert worker.stop() == 0


def test_default_model_text_mode_and_compact_vectors(bootstrap, worker_topics):
    """The packaged MiniLM with labels-file scoring; plain-text input; base64 float16 vectors."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from worker.encoder import default_model_path

    topics = worker_topics
    texts = ["Why was I charged twice this month?", "You are a pathetic idiot", "Thanks, great support!"] * 20
    produce(bootstrap, topics["input"], [(None, t.encode()) for t in texts])
    env = worker_env(bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}", input__format="text",
                     output__embedding_encoding="base64-f16", output__top_k=2)
    with WorkerProcess(env) as worker:
        labels = read_json(bootstrap, topics["labels"], len(texts), timeout_s=180)
        embeddings = read_json(bootstrap, topics["embeddings"], len(texts), timeout_s=30)
        assert worker.stop() == 0
    assert len(labels) == len(texts) == len(embeddings)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    model = AutoModel.from_pretrained(default_model_path(), dtype=torch.float32).eval()
    encoded = tokenizer(texts[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    by_offset = {(r["source"]["partition"], r["source"]["offset"]): r for r in embeddings}
    for record in labels:
        vector = decode_vector(by_offset[(record["source"]["partition"], record["source"]["offset"])])
        # The nearest of the three texts, and near enough for float16 on the wire and the worker's
        # precision (float32, or bfloat16 where the CPU computes it natively: cosine ≥ 0.999).
        similarity = expected @ vector / np.linalg.norm(vector)
        text_index = int(similarity.argmax())
        assert similarity[text_index] >= 0.999, f"embedding matches none of the texts: {similarity}"
        assert np.sort(similarity)[-2] < 0.5
        assert record["id"] == f"{topics['input']}:{record['source']['partition']}:{record['source']['offset']}"
        assert record["scoring"] == "cosine" and len(record["labels"]) == 2
        assert record["label"] == ["billing question", "harassment", "praise"][text_index]
        assert record["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_bad_setting_fails_at_start_with_its_name(bootstrap, worker_topics):
    env = worker_env(bootstrap, worker_topics, "g", batch__max_size="zero")
    result = subprocess.run([sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKER_BATCH__MAX_SIZE" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_output_topic_fails_at_start_with_its_name(bootstrap, worker_topics):
    topics = {**worker_topics, "labels": f"missing-{uuid.uuid4().hex[:6]}"}
    env = worker_env(bootstrap, topics, "g")
    result = subprocess.run([sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKER_TOPICS__LABELS" in result.stderr and topics["labels"] in result.stderr


def test_unreachable_broker_fails_at_start_with_its_name(worker_topics):
    from worker.local_broker import free_port

    env = worker_env(f"127.0.0.1:{free_port()}", worker_topics, "g", kafka__startup_timeout_s=2)
    result = subprocess.run([sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKER_KAFKA__BOOTSTRAP_SERVERS" in result.stderr


def test_sigterm_mid_run_finishes_in_hand_work_and_restart_duplicates_nothing(bootstrap, worker_topics, tiny_bert_dir):
    """Graceful stop: batches in hand are finished, delivered and committed; the next worker starts after them."""
    model_dir = tiny_bert_dir
    topics = worker_topics
    group = f"g-{uuid.uuid4().hex[:8]}"
    texts = mixed_texts(4000, seed=11)
    produce(bootstrap, topics["input"], [(f"k{i % 9}".encode(), json_event(f"t{i}", t)) for i, t in enumerate(texts)])
    env = worker_env(bootstrap, topics, group, model__path=model_dir, model__max_length=128,
                     batch__max_size=16, batch__sort_window=64, batch__max_wait_ms=5)
    # Slowed passes keep the first run from getting through the input before the signal on any machine:
    # at most 16 / 0.05 = 320 events/s, so the 4,000 take over 12 s.
    with WorkerProcess(env, slow_batch_s=0.05) as worker:
        wait_until(lambda: len(read_json(bootstrap, topics["labels"], 300, timeout_s=2)) >= 300, timeout_s=120,
                   what="the first outputs")
        assert worker.stop(signal.SIGTERM) == 0, worker.logs()[-3000:]
        logs = worker.logs()
    first_run = read_json(bootstrap, topics["labels"], len(texts), timeout_s=5)
    assert 300 <= len(first_run) < len(texts), "the run should be stopped part-way"
    assert "stopping: draining in-flight events" in logs and "worker stopped" in logs

    with WorkerProcess(env) as worker:
        labels = read_json(bootstrap, topics["labels"], len(texts), timeout_s=240)
        assert worker.stop() == 0
    ids = [r["id"] for r in labels]
    assert sorted(set(ids)) == sorted(f"t{i}" for i in range(len(texts)))
    assert len(ids) == len(texts), f"{len(ids) - len(texts)} duplicates after a graceful stop"


def test_a_property_librdkafka_refuses_fails_at_start_with_its_setting(bootstrap, worker_topics):
    env = worker_env(bootstrap, worker_topics, "g", kafka__consumer_config={"no.such.property": 1})
    result = subprocess.run([sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKER_KAFKA__CONSUMER_CONFIG" in result.stderr and "no.such.property" in result.stderr
    # Before the model loads (what a slower check would cost), whatever the machine's speed.
    assert "effective settings" in result.stderr and "model loaded" not in result.stderr
