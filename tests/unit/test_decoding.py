import pytest

from worker.decoding import Decoded, DecodePolicy, Reason, Rejection, check_record_size, decode, record_bytes

JSON = DecodePolicy(json_input=True, max_record_bytes=10_000, max_text_chars=1_000)
TEXT = DecodePolicy(json_input=False, max_record_bytes=10_000, max_text_chars=1_000)


def test_valid_event_with_id():
    assert decode(b'{"id": "e1", "text": "hello", "metadata": {"a": 1}}', "t:0:5", JSON) == Decoded("e1", "hello")


def test_missing_or_null_id_defaults_to_coordinates():
    assert decode(b'{"text": "hello"}', "t:0:5", JSON) == Decoded("t:0:5", "hello")
    assert decode(b'{"id": null, "text": "hello"}', "t:0:5", JSON) == Decoded("t:0:5", "hello")


def test_unknown_fields_are_allowed():
    assert isinstance(decode(b'{"text": "x", "lang": "en"}', "d", JSON), Decoded)


def test_duplicate_key_in_metadata_is_harmless():
    assert decode(b'{"text": "a", "metadata": {"text": 1, "text": 2}}', "d", JSON) == Decoded("d", "a")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.NULL_VALUE),
        (b"x" * 10_001, Reason.RECORD_TOO_LARGE),
        (b"\xff\xfe\x00junk", Reason.INVALID_UTF8),
        (b'{"text": "caf\xe9"}', Reason.INVALID_UTF8),
        (b"", Reason.INVALID_JSON),
        (b"not json", Reason.INVALID_JSON),
        (b'{"text": "a"', Reason.INVALID_JSON),
        (b'{"text": "\\ud800"}', Reason.INVALID_JSON),
        (b'{"text": "a", "n": 1e999999}', Reason.INVALID_JSON),
        (b"[" * 2000 + b"]" * 2000, Reason.INVALID_JSON),
        (b'{"text": "a", "n": NaN}', Reason.INVALID_JSON),
        (b'{"text": "a\x00b"}', Reason.INVALID_JSON),
        (b'["text"]', Reason.NOT_AN_OBJECT),
        (b'"just a string"', Reason.NOT_AN_OBJECT),
        (b"42", Reason.NOT_AN_OBJECT),
        (b"null", Reason.NOT_AN_OBJECT),
        (b'{"text": "a", "text": "b"}', Reason.DUPLICATE_KEY),
        (b'{"id": "a", "id": "b", "text": "x"}', Reason.DUPLICATE_KEY),
        (b'{"body": "hello"}', Reason.MISSING_TEXT),
        (b'{"text": null}', Reason.TEXT_NOT_STRING),
        (b'{"text": 42}', Reason.TEXT_NOT_STRING),
        (b'{"text": ["a"]}', Reason.TEXT_NOT_STRING),
        (b'{"text": {"en": "a"}}', Reason.TEXT_NOT_STRING),
        (b'{"text": ""}', Reason.EMPTY_TEXT),
        (b'{"text": " \\n\\t "}', Reason.EMPTY_TEXT),
        (b'{"text": "a\\u0000b"}', Reason.INVALID_TEXT),
        (b'{"text": "' + b"a" * 1001 + b'"}', Reason.TEXT_TOO_LONG),
        (b'{"id": 7, "text": "a"}', Reason.INVALID_ID),
        (b'{"id": "", "text": "a"}', Reason.INVALID_ID),
        (b'{"id": "' + b"i" * 1025 + b'", "text": "a"}', Reason.INVALID_ID),
        (b'{"text": "a", "metadata": [1]}', Reason.INVALID_METADATA),
    ],
)
def test_bad_json_records_are_rejected_with_a_reason(value, reason):
    outcome = decode(value, "t:0:1", JSON)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason == reason, outcome
    assert outcome.message


def test_text_mode_takes_the_value_as_text():
    assert decode("héllo wörld".encode(), "t:1:2", TEXT) == Decoded("t:1:2", "héllo wörld")
    assert decode(b'{"text": "raw json is just text"}', "d", TEXT) == Decoded("d", '{"text": "raw json is just text"}')


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xc3\x28", Reason.INVALID_UTF8),
        (b"   ", Reason.EMPTY_TEXT),
        (b"a\x00b", Reason.INVALID_TEXT),
        (b"a" * 1001, Reason.TEXT_TOO_LONG),
        (None, Reason.NULL_VALUE),
    ],
)
def test_text_mode_rejections(value, reason):
    outcome = decode(value, "d", TEXT)
    assert isinstance(outcome, Rejection) and outcome.reason == reason


def test_every_reason_is_listed():
    assert {Reason.NULL_VALUE, Reason.MODEL_ERROR, Reason.TOO_MANY_TOKENS} <= set(Reason.all())


def test_deep_nesting_with_duplicate_keys_is_rejected_not_raised():
    # orjson takes 1,000 levels; the stdlib parser used for the duplicate-key check recurses too deep.
    value = b'{"text": "a", "text": "b", "m": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    outcome = decode(value, "d", JSON)
    assert isinstance(outcome, Rejection) and outcome.reason == Reason.INVALID_JSON


def test_record_size_counts_key_value_and_headers():
    assert record_bytes(b"v" * 10, b"k" * 5, [("h", b"x" * 4), ("empty", None)]) == 10 + 5 + 1 + 4 + 5
    assert record_bytes(None, None, None) == 0
    assert check_record_size(10_000, JSON) is None
    rejection = check_record_size(10_001, JSON)
    assert rejection is not None and rejection.reason == Reason.RECORD_TOO_LARGE
    assert "WORKER_INPUT__MAX_RECORD_BYTES" in rejection.message
