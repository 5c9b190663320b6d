"""Token ids for a chunk of texts in one call into the Rust tokenizer, reading no further into a
text than the model can see. Knows nothing of torch or Kafka.

A tokenizer truncates after it has tokenized the whole text: a 5,000-word post cut to 256 tokens
costs the tokenizing of ~6,500. Where the tokenizer's pre-tokenizer splits on whitespace (so the
tokens before a space do not depend on what follows it), a text much longer than the model's limit
is tokenized from a prefix cut at a space instead. The prefix must still overflow the limit by a
margin, so that its last words (which may tokenize differently without their context) are cut away
by truncation; a prefix that does not is tokenized again whole. The ids are the same either way (a
test holds them equal for WordPiece, byte-level BPE and SentencePiece-style tokenizers).

BERT's normalizer (BERT, MiniLM and their kin) decomposes every character to strip accents and
rewrites control characters: about a quarter of the tokenizer's time on everyday text, and a no-op
on ASCII text without control characters, where only its lowercasing does anything. Such texts go
to a second copy of the tokenizer that only lowercases (the ids are the same: a test holds them
equal).
"""

from __future__ import annotations

import json
import re

from tokenizers import Encoding, Tokenizer, normalizers

# Prefixes are cut at this many characters per token of the limit: English averages ~4.3 for
# WordPiece, so a prefix nearly always holds the tokens needed; one that does not is redone whole.
CHARS_PER_TOKEN = 8
# Tokens a prefix must have past the limit: its last words, which may tokenize differently when
# the text is cut after them, fall in these.
OVERFLOW_MARGIN = 16

# Pre-tokenizers that split on whitespace: the tokens before a space do not depend on what follows.
_SPLITS_ON_WHITESPACE = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
# Pre-tokenizers that only split further (their decisions near the cut are local, within the margin).
_ONLY_SPLIT = _SPLITS_ON_WHITESPACE | {"Punctuation", "Digits", "Split", "UnicodeScripts", "CharDelimiterSplit"}
_WHITESPACE = (" ", "\n", "\t")
# The ASCII characters BERT's `clean_text` removes (controls other than tab, newline and return).
# It also turns tab, newline and return into spaces: the same to a pre-tokenizer that splits on
# whitespace, not to others (a tokenizer with one of those sends texts holding them the long way).
_CLEANED_ASCII = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CLEANED_OR_SPACED_ASCII = re.compile(r"[\x00-\x1f\x7f]")


def cuts_at_whitespace(pre_tokenizer: dict | None) -> bool:
    """Whether a tokenizer with this pre-tokenizer (its JSON) tokenizes the words before a space
    the same whatever follows the space."""
    if not pre_tokenizer:
        return False
    kind = pre_tokenizer.get("type")
    if kind in _SPLITS_ON_WHITESPACE:
        return True
    if kind == "ByteLevel":
        return bool(pre_tokenizer.get("use_regex", True))  # without its regex nothing is split
    if kind == "Metaspace":
        return bool(pre_tokenizer.get("split", True))
    if kind == "Sequence":
        members = pre_tokenizer.get("pretokenizers") or []
        splitting = [member for member in members if cuts_at_whitespace(member)]
        others = [member for member in members if not cuts_at_whitespace(member)]
        return bool(splitting) and all(member.get("type") in _ONLY_SPLIT for member in others)
    return False


class TruncatingTokenizer:
    """A copy of a Rust tokenizer, without padding and truncating at `max_length` tokens."""

    def __init__(self, original: Tokenizer, max_length: int) -> None:
        self.max_length = max_length
        serialized = original.to_str()
        # A copy: the wrapper's own truncation settings, which it resets on every call, stay its own.
        self.backend = Tokenizer.from_str(serialized)
        self.backend.no_padding()
        self.backend.enable_truncation(max_length)
        config = json.loads(serialized)
        self.prefix_chars: int | None = (
            max_length * CHARS_PER_TOKEN if cuts_at_whitespace(config.get("pre_tokenizer")) else None
        )
        self.ascii_backend: Tokenizer | None = None  # for plain ASCII texts, where it gives the same ids
        self.not_plain: re.Pattern[str] | None = None  # ASCII characters the normalizer would change
        normalizer = config.get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer":
            self.ascii_backend = Tokenizer.from_str(self.backend.to_str())
            self.ascii_backend.normalizer = normalizers.Lowercase() if normalizer.get("lowercase", True) else None
            if normalizer.get("clean_text", True):
                splits = (config.get("pre_tokenizer") or {}).get("type") in _SPLITS_ON_WHITESPACE
                self.not_plain = _CLEANED_ASCII if splits else _CLEANED_OR_SPACED_ASCII

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, as the tokenizer gives them for the whole text truncated at `max_length`."""
        limit = self.prefix_chars
        cut_rows = [] if limit is None else [row for row, text in enumerate(texts) if len(text) > limit]
        if not cut_rows:
            return [encoding.ids for encoding in self._encode(texts)]
        inputs = list(texts)
        for row in cut_rows:
            space = max(texts[row].rfind(mark, 0, limit) for mark in _WHITESPACE)
            if space > 0:
                inputs[row] = texts[row][:space]
        encodings = self._encode(inputs)
        ids = [encoding.ids for encoding in encodings]
        redo = [
            row for row in cut_rows
            if inputs[row] is not texts[row]
            and sum(len(piece.ids) for piece in encodings[row].overflowing) < OVERFLOW_MARGIN
        ]
        if redo:
            for row, encoding in zip(redo, self._encode([texts[row] for row in redo])):
                ids[row] = encoding.ids
        return ids

    def _encode(self, texts: list[str]) -> list[Encoding]:
        """The encodings of `texts` in order: plain ASCII texts through the ASCII copy, if any."""
        plain_backend = self.ascii_backend
        if plain_backend is None:
            return self.backend.encode_batch_fast(texts)
        plain = [row for row, text in enumerate(texts) if text.isascii()]
        not_plain = self.not_plain
        if not_plain is not None and plain and not_plain.search("".join([texts[row] for row in plain])):
            plain = [row for row in plain if not not_plain.search(texts[row])]  # rare: find them
        if len(plain) == len(texts):
            return plain_backend.encode_batch_fast(texts)
        if not plain:
            return self.backend.encode_batch_fast(texts)
        encodings: list[Encoding] = [None] * len(texts)  # type: ignore[list-item]
        for row, encoding in zip(plain, plain_backend.encode_batch_fast([texts[row] for row in plain])):
            encodings[row] = encoding
        others = [row for row, encoding in enumerate(encodings) if encoding is None]
        for row, encoding in zip(others, self.backend.encode_batch_fast([texts[row] for row in others])):
            encodings[row] = encoding
        return encodings
