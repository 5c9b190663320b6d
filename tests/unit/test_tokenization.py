"""Long texts are tokenized from a prefix cut at a space; the ids must be those of the whole text.

Real tokenizers: the packaged MiniLM's (WordPiece), and byte-level and SentencePiece-style BPE
tokenizers trained here in a second on generated text (no download).
"""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from bench.dataset import generate
from worker.encoder import default_model_path
from worker.tokenization import CHARS_PER_TOKEN, TruncatingTokenizer, cuts_at_whitespace

CORPUS = generate(400, seed=7).texts


def minilm() -> Tokenizer:
    return Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))


def trained_bpe(kind: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "byte-level":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 1))
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-style: NFKC, spaces as ▁, split before each
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
        )
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def hard_texts(max_length: int) -> list[str]:
    """Texts around and far past the cut: prose, runs of whitespace, accents, CJK, long words, a
    blob without spaces, and texts whose prefix holds too few tokens."""
    limit = max_length * CHARS_PER_TOKEN
    rng = random.Random(3)
    prose = " ".join(CORPUS)
    texts = [prose[start : start + length] for start, length in
             ((rng.randrange(len(prose) // 2), rng.choice([limit - 1, limit, limit + 1, 2 * limit, 9 * limit]))
              for _ in range(40))]
    texts += [
        "Ünïcödé àccents, naïve café " * (limit // 20),
        "漢字のテキストと English mixed. " * (limit // 15),
        "x" * (3 * limit),  # no space to cut at: tokenized whole
        "a" + " " * (limit + 50) + "words after a long run of spaces " * 20,  # prefix too short: redone
        "pneumonoultramicroscopicsilicovolcanoconiosis " * (limit // 30),
        "tab\tseparated\tand\nnew\nlines " * (limit // 10),
        "short text",
        "",
    ]
    return texts


def reference_ids(original: Tokenizer, max_length: int, texts: list[str]) -> list[list[int]]:
    """The ids the tokenizer itself gives each whole text, truncated at `max_length`, unpadded."""
    reference = Tokenizer.from_str(original.to_str())
    reference.no_padding()
    reference.enable_truncation(max_length)
    return [encoding.ids for encoding in reference.encode_batch(texts)]


@pytest.mark.parametrize("kind", ["wordpiece", "byte-level", "metaspace"])
@pytest.mark.parametrize("max_length", [16, 33, 257])
def test_the_ids_are_those_of_the_whole_text(kind, max_length):
    original = minilm() if kind == "wordpiece" else trained_bpe(kind)
    texts = hard_texts(max_length)
    tokenizer = TruncatingTokenizer(original, max_length)
    assert tokenizer.prefix_chars == max_length * CHARS_PER_TOKEN
    assert tokenizer.ids(texts) == reference_ids(original, max_length, texts)


class RecordingBackend:
    """Delegates to the real tokenizer and remembers the texts it was given."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend = backend
        self.calls: list[list[str]] = []

    def encode_batch_fast(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        return self.backend.encode_batch_fast(texts)


def test_a_long_text_is_tokenized_from_a_prefix_and_one_that_comes_out_short_again_whole():
    tokenizer = TruncatingTokenizer(minilm(), 32)
    recording = tokenizer.ascii_backend = RecordingBackend(tokenizer.ascii_backend)  # type: ignore[assignment]
    long_text = "many words in a long post " * 500
    spaced_out = "a" + " " * 400 + "then words " * 100  # its prefix holds a single word
    tokenizer.ids(["short", long_text, spaced_out])
    first, second = recording.calls
    assert first[0] == "short" and len(first[1]) <= 32 * CHARS_PER_TOKEN and long_text.startswith(first[1])
    assert second == [spaced_out]


def test_tokenizers_that_do_not_split_on_whitespace_read_whole_texts():
    assert cuts_at_whitespace(minilm_pre_tokenizer())
    assert cuts_at_whitespace({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Punctuation"}]})
    assert cuts_at_whitespace({"type": "ByteLevel", "use_regex": True})
    assert not cuts_at_whitespace(None)
    assert not cuts_at_whitespace({"type": "ByteLevel", "use_regex": False})
    assert not cuts_at_whitespace({"type": "Metaspace", "split": False})
    assert not cuts_at_whitespace({"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"})
    assert not cuts_at_whitespace({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Mystery"}]})

    unsplit = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))  # no pre-tokenizer at all
    tokenizer = TruncatingTokenizer(unsplit, 8)
    recording = tokenizer.backend = RecordingBackend(tokenizer.backend)  # type: ignore[assignment]
    text = "words " * 1000
    tokenizer.ids([text])
    assert tokenizer.prefix_chars is None and recording.calls == [[text]]


def minilm_pre_tokenizer() -> dict:
    import json

    return json.loads(minilm().to_str())["pre_tokenizer"]


def bert_normalized(lowercase: bool, clean_text: bool) -> Tokenizer:
    """MiniLM's tokenizer with its `BertNormalizer` set as cased and uncased BERTs have it."""
    tokenizer = minilm()
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=clean_text, lowercase=lowercase)
    return tokenizer


def ascii_texts(count: int) -> list[str]:
    """ASCII texts of words, capitals, punctuation and every control character, some only rarely."""
    rng = random.Random(11)
    words = " ".join(CORPUS).split()
    pieces = words + ["HELLO", "MiXeD", "e-mail", "x!?", "\t", "\n", "\r\n", "  "]
    controls = [chr(code) for code in range(32) if chr(code) not in "\t\n\r"] + ["\x7f"]
    texts = []
    for _ in range(count):
        parts = rng.choices(pieces, k=rng.randrange(1, 60))
        if rng.random() < 0.1:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(controls) + rng.choice(words))
        texts.append(rng.choice(["", " "]).join(parts))
    return texts


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("clean_text", [True, False])
def test_plain_ascii_texts_skip_the_bert_normalizer_with_the_same_ids(lowercase, clean_text):
    original = bert_normalized(lowercase, clean_text)
    texts = ascii_texts(600) + hard_texts(40)  # also non-ASCII texts and long ones cut at a prefix
    tokenizer = TruncatingTokenizer(original, 40)
    assert tokenizer.ascii_backend is not None
    routed = tokenizer.ascii_backend = RecordingBackend(tokenizer.ascii_backend)  # type: ignore[assignment]
    assert tokenizer.ids(texts) == reference_ids(original, 40, texts)
    went_plain = [text for call in routed.calls for text in call]
    assert went_plain and all(text.isascii() for text in went_plain)
    controlled = [text for text in texts if text.isascii() and any(ord(c) < 32 and c not in "\t\n\r" for c in text)]
    assert controlled and all(text not in went_plain for text in controlled) == clean_text


def test_tokenizers_without_bert_normalizer_have_no_ascii_copy():
    assert TruncatingTokenizer(trained_bpe("byte-level"), 16).ascii_backend is None
    assert TruncatingTokenizer(trained_bpe("metaspace"), 16).ascii_backend is None


def test_tabs_and_newlines_take_the_long_way_where_the_pre_tokenizer_does_not_split_on_them():
    """`clean_text` turns them into spaces; a pre-tokenizer that splits on single spaces only sees
    the difference, so the ASCII copy must not be given them."""
    original = bert_normalized(lowercase=True, clean_text=True)
    original.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    texts = ["tab\tseparated words", "new\nline here", "carriage\r\nreturn", "plain words only"]
    expected = reference_ids(original, 40, texts)
    tokenizer = TruncatingTokenizer(original, 40)
    assert tokenizer.ascii_backend is not None
    assert tokenizer.ascii_backend.encode(texts[0]).ids != expected[0]  # the copy would get it wrong
    assert tokenizer.ids(texts) == expected
