"""Poison input: each kind of bad record lands in the dead-letter topic with its reason; the stream goes on."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.fault_support import TopicReader, produce_raw
from tests.support.kafka_support import committed_at_end, end_offsets, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1 << 20

# (name, key, value, headers, dead-letter reason)
POISON: list[tuple[str, bytes | None, bytes | None, list | None, str]] = [
    ("binary junk", b"p", bytes(range(256)) * 4, None, "invalid_utf8"),
    ("invalid UTF-8 in a string", b"p", b'{"text": "caf\xe9"}', None, "invalid_utf8"),
    ("overlong UTF-8", b"p", b'{"text": "\xc0\xaf"}', None, "invalid_utf8"),
    ("UTF-8-encoded surrogate", b"p", b'{"text": "\xed\xa0\x80"}', None, "invalid_utf8"),
    ("lone surrogate escape", b"p", b'{"text": "a\\ud800b"}', None, "invalid_json"),
    ("JSON array", b"p", b'["text", "hello"]', None, "not_an_object"),
    ("JSON string", b"p", b'"hello"', None, "not_an_object"),
    ("JSON number", b"p", b"42", None, "not_an_object"),
    ("JSON null", b"p", b"null", None, "not_an_object"),
    ("null value (tombstone)", b"p", None, None, "null_value"),
    ("empty value", b"p", b"", None, "invalid_json"),
    ("truncated JSON", b"p", b'{"text": "abc', None, "invalid_json"),
    ("trailing garbage", b"p", b'{"text": "a"} {"text": "b"}', None, "invalid_json"),
    ("NaN literal", b"p", b'{"text": "a", "score": NaN}', None, "invalid_json"),
    ("byte-order mark", b"p", b'\xef\xbb\xbf{"text": "a"}', None, "invalid_json"),
    ("text is a number", b"p", b'{"text": 1e308}', None, "text_not_string"),
    ("text is null", b"p", b'{"text": null}', None, "text_not_string"),
    ("text is an array", b"p", b'{"text": ["a", "b"]}', None, "text_not_string"),
    ("no text", b"p", b'{"id": "no-text", "body": "hello"}', None, "missing_text"),
    ("empty text", b"p", b'{"text": ""}', None, "empty_text"),
    ("whitespace-only text", b"p", '{"text": " \\t\\n\u3000\u00a0 "}'.encode(), None, "empty_text"),
    ("NUL character in text", b"p", b'{"text": "a\\u0000b"}', None, "invalid_text"),
    ("raw NUL byte", b"p", b'{"text": "a\x00b"}', None, "invalid_json"),
    ("10 MB value", b"p", b'{"text": "' + b"a" * (10 * MB) + b'"}', None, "record_too_large"),
    ("1.5 MB header", b"p", b'{"text": "small"}', [("blob", b"h" * (3 * MB // 2))], "record_too_large"),
    ("1.5 MB key", b"k" * (3 * MB // 2), b'{"text": "small"}', None, "record_too_large"),
    ("text over max_text_chars", b"p", orjson.dumps({"text": "b" * 100_001}), None, "text_too_long"),
    ("nested 2,000 levels", b"p", b"[" * 2000 + b"]" * 2000, None, "invalid_json"),
    ("nested 1,000 levels with duplicate keys", b"p",
     b'{"text": "a", "text": "b", "m": ' + b"[" * 1000 + b"]" * 1000 + b"}", None, "invalid_json"),
    ("huge number as id", b"p", b'{"id": 123456789012345678901234567890, "text": "a"}', None, "invalid_id"),
    ("infinite number", b"p", b'{"text": "a", "n": 1e999}', None, "invalid_json"),
    ("duplicate text key", b"p", b'{"text": "harmless", "text": "the real one"}', None, "duplicate_key"),
    ("duplicate id key", b"p", b'{"id": "a", "id": "b", "text": "x"}', None, "duplicate_key"),
    ("id too long", b"p", orjson.dumps({"id": "i" * 2000, "text": "x"}), None, "invalid_id"),
    ("empty id", b"p", b'{"id": "", "text": "x"}', None, "invalid_id"),
    ("metadata not an object", b"p", b'{"text": "x", "metadata": [1, 2]}', None, "invalid_metadata"),
]


def test_poison_records_are_dead_lettered_and_the_stream_goes_on(bootstrap, topic_factory, tiny_bert_dir, group, spawn):
    assert len(POISON) >= 20
    topics = {"labels": topic_factory("labels", 1), "embeddings": topic_factory("emb", 1),
              "dead_letter": topic_factory("dlq", 1), "input": f"in-{group}"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # On Apache Kafka the input topic must take the 10 MB record (Tansu has no limit).
    big_records = NewTopic(topics["input"], 1, 1, config={"max.message.bytes": str(16 * MB)})
    admin.create_topics([big_records])[topics["input"]].result(30)

    records, expected = [], {}  # expected: input offset -> (name, reason, key, value)
    for n, (name, key, value, headers, reason) in enumerate(POISON):
        records.append((b"p", orjson.dumps({"id": f"good-{n}", "text": f"a good event, number {n}"}), None))
        expected[len(records)] = (name, reason, key, value)
        records.append((key, value, headers))
    records.append((b"p", orjson.dumps({"id": f"good-{len(POISON)}", "text": "the last good event"}), None))
    produce_raw(bootstrap, topics["input"], records, **{"message.max.bytes": 16 * MB})
    good = [f"good-{n}" for n in range(len(POISON) + 1)]

    worker = spawn(worker_env(bootstrap, topics, group, model__path=tiny_bert_dir, model__max_length=32))
    with TopicReader(bootstrap, topics["labels"]) as labels, TopicReader(bootstrap, topics["dead_letter"]) as dead:
        labels.read_until_ids(set(good), timeout_s=180)
        dead.read_until(len(POISON), timeout_s=60, quiet_s=2)
    ends = end_offsets(bootstrap, topics["input"], len(records))
    wait_until(lambda: committed_at_end(bootstrap, group, topics["input"], 1, ends), timeout_s=30,
               what="committed offsets to reach the end of the input")
    assert worker.running(), worker.logs()[-3000:]
    assert worker.stop() == 0, worker.logs()[-3000:]

    # The good records around the poison, once each and in order.
    assert [orjson.loads(m.value())["id"] for m in labels.messages] == good
    # Each poison record once, in input order, with its reason, a message and its coordinates.
    assert len(dead.messages) == len(POISON)
    problems = []
    for message, (offset, (name, reason, key, value)) in zip(dead.messages, sorted(expected.items())):
        headers = dict(message.headers())
        got = headers["dlq.error.type"].decode()
        if got != reason or int(headers["dlq.source.offset"]) != offset:
            problems.append(f"{name}: got {got} at offset {headers['dlq.source.offset'].decode()}, expected {reason}")
        assert headers["dlq.error.message"], name
        if reason == "record_too_large":
            # Dead-lettered without the value, so that the dead letter always fits: the original stays in the input.
            assert message.value() is None, name
        else:
            assert message.value() == value and message.key() == key, name
    assert not problems, "\n".join(problems)
    print(f"\n{len(POISON)} kinds of poison dead-lettered with their reasons; {len(good)} good records processed")
