"""Intake's limits: one oversized record is rejected before decoding and dead-lettered without its bulk."""

from __future__ import annotations

from worker.decoding import DecodePolicy, Reason
from worker.intake import Intake
from worker.offsets import OffsetTracker


class FakeMessage:
    def __init__(self, offset: int, value: bytes | None, key: bytes | None = None, headers=None) -> None:
        self._offset, self._value, self._key, self._headers = offset, value, key, headers

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self):
        return self._headers


def intake(tokenized: list[str]) -> Intake:
    def tokenize(texts: list[str], overflow: int) -> list[list[int]]:
        tokenized.extend(texts)
        return [[1, 2, 3] for _ in texts]

    return Intake(DecodePolicy(max_record_bytes=1000, max_text_chars=500), tokenize, 16, False, OffsetTracker())


def test_oversized_records_are_rejected_before_tokenizing_and_shed_their_bulk():
    tokenized: list[str] = []
    big_value = FakeMessage(0, b'{"text": "' + b"a" * 2000 + b'"}', key=b"user-1", headers=[("tenant", b"acme")])
    big_headers = FakeMessage(1, b'{"text": "small"}', key=b"user-2", headers=[("blob", b"h" * 2000)])
    big_key = FakeMessage(2, b'{"text": "small"}', key=b"k" * 2000)
    fine = FakeMessage(3, b'{"text": "fine"}', key=b"user-3", headers=[("tenant", b"acme")])
    accepted, lengths = intake(tokenized).accept([big_value, big_headers, big_key, fine])

    assert tokenized == ["fine"]
    reasons = [entry.rejection.reason if entry.rejection else None for entry in accepted]
    assert reasons == [Reason.RECORD_TOO_LARGE] * 3 + [None]
    assert lengths == [None, None, None, 3]
    value_only, headers_too, key_too, kept = accepted
    # The value is never copied to the dead letter; key and headers are, unless they are the bulk.
    assert value_only.value is None and value_only.key == b"user-1" and value_only.headers == [("tenant", b"acme")]
    assert headers_too.value is None and headers_too.key is None and headers_too.headers is None
    assert key_too.value is None and key_too.key is None
    assert kept.value == b'{"text": "fine"}' and kept.token_ids == [1, 2, 3]
