"""A reproducible mixed-length text set: short chat lines to multi-paragraph posts.

Lengths follow a mixture close to what a support/moderation stream sees: most events are
chat-sized (a handful of words), a quarter are comment-sized, and a few are long posts of
several paragraphs (up to ~500 words, so past the model's `max_length` and truncated).
The median is ~16 words. Sentences are built from templates over everyday vocabulary with
names, numbers, order codes, links and typos mixed in, so tokens per word are realistic
(~1.3 with a WordPiece tokenizer) rather than one token per word.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

SEED = 20261126
MAX_WORDS = 500

SUBJECTS = [
    "I", "we", "my wife", "my manager", "the support team", "your app", "the driver", "our team",
    "this company", "the new update", "my account", "the website", "everyone here", "the store",
    "my son", "the delivery guy", "your billing system", "the dashboard", "customer service",
    "the checkout page", "my landlord", "the courier", "the refund team", "your moderator",
]
VERBS = [
    "charged", "ignored", "fixed", "cancelled", "refunded", "blocked", "shipped", "lost", "updated",
    "deleted", "helped", "confused", "emailed", "billed", "promised", "answered", "broke", "loved",
    "recommended", "reported", "missed", "delayed", "approved", "rejected", "restored",
]
OBJECTS = [
    "my order", "the invoice", "my subscription", "the payment", "my password", "the package",
    "a second card", "the whole thread", "my refund", "the meeting", "the new plan", "my profile",
    "the gift card", "the shipping label", "the return form", "my last message", "the receipt",
    "the annual fee", "the trial period", "the warranty claim", "the promo code", "my booking",
]
ADVERBS = [
    "again", "twice", "yesterday", "this morning", "last week", "without asking", "for no reason",
    "right away", "in minutes", "after three days", "on Monday", "before the deadline", "somehow",
    "as usual", "once more", "by mistake", "late at night", "during checkout",
]
ADJECTIVES = [
    "great", "terrible", "slow", "helpful", "rude", "confusing", "fast", "expensive", "broken",
    "amazing", "useless", "friendly", "late", "wrong", "fine", "awful", "excellent", "annoying",
]
OPENERS = [
    "hi", "hello", "hey there", "ok so", "honestly", "quick question", "update", "fyi", "sorry but",
    "thanks", "ugh", "wow", "good morning", "lol", "to be fair", "just saying",
]
QUESTIONS = [
    "why was I {verb} {adverb}?",
    "can someone tell me where {object} is?",
    "how do I get {object} back?",
    "is it normal that {subject} {verb} {object} {adverb}?",
    "who approved {object} {adverb}?",
    "when will {object} be {verb}?",
    "does anyone know why {subject} {verb} {object}?",
]
STATEMENTS = [
    "{subject} {verb} {object} {adverb}.",
    "{subject} {verb} {object} and nobody told me.",
    "the {adjective} part is that {subject} {verb} {object} {adverb}.",
    "{object} was {adjective}, {adverb}.",
    "{subject} {verb} {object}, which is {adjective}.",
    "I contacted support about {object} {adverb} and it was {adjective}.",
    "order #{number} was {verb} {adverb}, see {link}",
    "my ticket {code} about {object} is still open after {small} days.",
    "{name} from the {adjective} team {verb} {object} {adverb}.",
    "paid ${price} for {object} and {subject} {verb} it {adverb}.",
]
CHAT = [
    "{opener} {statement}",
    "{opener}, {question}",
    "{question}",
    "{statement}",
    "{adjective} service, {adverb}",
    "{opener} !!",
    "thx {name}",
    "{question} {statement}",
]
NAMES = ["Anna", "Jürgen", "Priya", "Mohammed", "Oluwaseun", "Siobhan", "Kwame", "Zoë", "Tomasz", "Hiroshi"]
TYPOS = {"the": "teh", "because": "becuase", "receive": "recieve", "definitely": "definately", "order": "ordr"}


@dataclass(frozen=True)
class TextSet:
    texts: list[str]
    seed: int

    def word_counts(self) -> list[int]:
        return [len(text.split()) for text in self.texts]

    def describe(self) -> dict[str, float]:
        words = sorted(self.word_counts())
        return {
            "events": len(words),
            "words_median": statistics.median(words),
            "words_mean": round(statistics.fmean(words), 1),
            "words_p90": words[int(0.9 * (len(words) - 1))],
            "words_p99": words[int(0.99 * (len(words) - 1))],
            "words_max": words[-1],
        }


class _Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def fill(self, template: str) -> str:
        r = self.rng
        return template.format(
            subject=r.choice(SUBJECTS),
            verb=r.choice(VERBS),
            object=r.choice(OBJECTS),
            adverb=r.choice(ADVERBS),
            adjective=r.choice(ADJECTIVES),
            opener=r.choice(OPENERS),
            name=r.choice(NAMES),
            number=r.randint(1000, 99999),
            small=r.randint(2, 30),
            price=f"{r.randint(5, 900)}.{r.randint(0, 99):02d}",
            code=f"{r.choice('ABCDEFGHJK')}{r.choice('XYZQRT')}-{r.randint(100, 9999)}",
            link=f"https://shop.example.com/o/{r.randint(10**5, 10**6)}",
            statement="{statement}",
            question="{question}",
        )

    def sentence(self) -> str:
        r = self.rng
        template = r.choice(STATEMENTS) if r.random() < 0.7 else r.choice(QUESTIONS)
        text = self.fill(template)
        text = text[0].upper() + text[1:]
        if r.random() < 0.08:
            words = [TYPOS.get(word, word) for word in text.split()]
            text = " ".join(words)
        return text

    def chat(self) -> str:
        r = self.rng
        text = self.fill(r.choice(CHAT))
        if "{statement}" in text:
            text = text.replace("{statement}", self.fill(r.choice(STATEMENTS)), 1)
        if "{question}" in text:
            text = text.replace("{question}", self.fill(r.choice(QUESTIONS)), 1)
        return text

    def prose(self, words: int) -> str:
        """Sentences grouped into paragraphs, cut at exactly `words` words."""
        paragraphs: list[str] = []
        paragraph: list[str] = []
        count = 0
        while count < words:
            sentence = self.sentence().split()[: words - count]
            paragraph.append(" ".join(sentence))
            count += len(sentence)
            if len(paragraph) >= self.rng.randint(3, 7):
                paragraphs.append(" ".join(paragraph))
                paragraph = []
        if paragraph:
            paragraphs.append(" ".join(paragraph))
        return "\n\n".join(paragraphs)


def target_words(rng: random.Random) -> int:
    """70% chat (median ~12 words), 25% comments (median ~40), 5% posts (120 to 500 words)."""
    roll = rng.random()
    if roll < 0.70:
        words = rng.lognormvariate(2.45, 0.6)
    elif roll < 0.95:
        words = rng.lognormvariate(3.7, 0.45)
    else:
        words = rng.uniform(120, MAX_WORDS)
    return max(1, min(MAX_WORDS, round(words)))


def generate(count: int, seed: int = SEED) -> TextSet:
    rng = random.Random(seed)
    writer = _Writer(rng)
    texts = []
    for _ in range(count):
        words = target_words(rng)
        if words <= 12:
            text = writer.chat()
            split = text.split()
            if len(split) > words:
                text = " ".join(split[:words])
        else:
            text = writer.prose(words)
        texts.append(text)
    return TextSet(texts=texts, seed=seed)


if __name__ == "__main__":
    sample = generate(5000)
    print(sample.describe())
    for text in sample.texts[:12]:
        print(repr(text[:160]))
