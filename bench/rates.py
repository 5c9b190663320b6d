"""Rates every timed run reports, from its event count, token count and seconds."""

from __future__ import annotations


class Rates:
    """Mixed into the result dataclasses, which supply `events`, `real_tokens` and `seconds`."""

    events: int
    real_tokens: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds


class PaddedRates(Rates):
    """Rates of a run that knows its padded tokens (all of them go through the model)."""

    padded_tokens: int

    @property
    def padding(self) -> float:
        return self.padded_tokens / max(1, self.real_tokens)
