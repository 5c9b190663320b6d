"""Decode and validate one input record's value: pure logic, no Kafka, no model.

A record is either a `Decoded` (id and text) or a `Rejection` (a machine-readable reason and a
message for the dead-letter topic). Nothing here raises on bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import orjson

from worker.records import MAX_ID_CHARS


class Reason:
    """Dead-letter reasons (the `dlq.error.type` header)."""

    NULL_VALUE = "null_value"
    RECORD_TOO_LARGE = "record_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TEXT = "missing_text"
    TEXT_NOT_STRING = "text_not_string"
    EMPTY_TEXT = "empty_text"
    INVALID_TEXT = "invalid_text"
    TEXT_TOO_LONG = "text_too_long"
    TOO_MANY_TOKENS = "too_many_tokens"
    INVALID_ID = "invalid_id"
    INVALID_METADATA = "invalid_metadata"
    MODEL_ERROR = "model_error"

    @classmethod
    def all(cls) -> list[str]:
        return [value for name, value in vars(cls).items() if name.isupper()]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decoded:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class DecodePolicy:
    json_input: bool = True
    max_record_bytes: int = 1_000_000
    max_text_chars: int = 100_000


def record_bytes(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None) -> int:
    """A record's size as the limit counts it: key, value, and header names and values."""
    size = len(value or b"") + len(key or b"")
    for name, header_value in headers or ():
        size += len(name) + len(header_value or b"")
    return size


def check_record_size(size: int, policy: DecodePolicy) -> Rejection | None:
    """Checked before anything else, so that one hostile record cannot make the worker decode megabytes."""
    if size > policy.max_record_bytes:
        return Rejection(
            Reason.RECORD_TOO_LARGE,
            f"record is {size} bytes (key, value and headers); the limit is {policy.max_record_bytes} "
            "(WORKER_INPUT__MAX_RECORD_BYTES)",
        )
    return None


def decode(value: bytes | None, default_id: str, policy: DecodePolicy) -> Decoded | Rejection:
    """Turn a record value into an event, or say why it cannot be one."""
    if value is None:
        return Rejection(Reason.NULL_VALUE, "record value is null (a tombstone?)")
    if len(value) > policy.max_record_bytes:
        return Rejection(
            Reason.RECORD_TOO_LARGE, f"record value is {len(value)} bytes; the limit is {policy.max_record_bytes}"
        )
    if policy.json_input:
        return _decode_json(value, default_id, policy)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.INVALID_UTF8, f"value is not valid UTF-8: {exc.reason} at byte {exc.start}")
    problem = _check_text(text, policy)
    return problem or Decoded(default_id, text)


def _decode_json(value: bytes, default_id: str, policy: DecodePolicy) -> Decoded | Rejection:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_exc:
            return Rejection(
                Reason.INVALID_UTF8, f"value is not valid UTF-8: {utf8_exc.reason} at byte {utf8_exc.start}"
            )
        return Rejection(Reason.INVALID_JSON, f"value is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"JSON value is {_json_type(obj)}, expected an object")
    # orjson keeps the last of duplicate keys silently; which "text" was meant is ambiguous.
    # The slow check runs only when a key name occurs twice in the raw bytes.
    if value.count(b'"text"') > 1 or value.count(b'"id"') > 1:
        try:
            dup = _duplicate_top_level_key(value)
        except RecursionError:
            # orjson accepts up to 1024 levels, the stdlib parser fewer: reject rather than crash.
            return Rejection(Reason.INVALID_JSON, "value is nested too deeply to check its keys for duplicates")
        if dup:
            return Rejection(Reason.DUPLICATE_KEY, f"key {dup!r} appears more than once")

    text = obj.get("text")
    if "text" not in obj:
        return Rejection(Reason.MISSING_TEXT, 'no "text" field')
    if not isinstance(text, str):
        return Rejection(Reason.TEXT_NOT_STRING, f'"text" is {_json_type(text)}, expected a string')
    problem = _check_text(text, policy)
    if problem:
        return problem

    event_id = obj.get("id")
    if event_id is None:
        event_id = default_id
    elif not isinstance(event_id, str):
        return Rejection(Reason.INVALID_ID, f'"id" is {_json_type(event_id)}, expected a string')
    elif not event_id or len(event_id) > MAX_ID_CHARS:
        return Rejection(Reason.INVALID_ID, f'"id" must have 1 to {MAX_ID_CHARS} characters, has {len(event_id)}')

    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return Rejection(Reason.INVALID_METADATA, f'"metadata" is {_json_type(metadata)}, expected an object')
    return Decoded(event_id, text)


def _check_text(text: str, policy: DecodePolicy) -> Rejection | None:
    if len(text) > policy.max_text_chars:
        return Rejection(
            Reason.TEXT_TOO_LONG, f"text has {len(text)} characters; the limit is {policy.max_text_chars}"
        )
    if not text.strip():
        return Rejection(Reason.EMPTY_TEXT, "text is empty or only whitespace")
    if "\x00" in text:
        return Rejection(Reason.INVALID_TEXT, "text contains NUL characters")
    return None


def _duplicate_top_level_key(value: bytes) -> str | None:
    object_keys: list[list[str]] = []

    def keep_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        object_keys.append([key for key, _ in pairs])
        return dict(pairs)

    json.loads(value, object_pairs_hook=keep_keys)
    # The outermost object completes last; a duplicate nested inside metadata is harmless.
    seen: set[str] = set()
    for key in object_keys[-1]:
        if key in seen:
            return key
        seen.add(key)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
