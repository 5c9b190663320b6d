"""Sections of docs/benchmarks.md that bench/run.py does not write, between HTML-comment markers.

Two writers share the file: bench/host_capacity.py owns its section and replaces it in place, and
"Tried and measured" is kept by hand (what was tried is prose, not a figure a run produces). When
bench/run.py rewrites the rest of the report, both come over from the file it replaces. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MarkedSection:
    name: str

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.start) + r".*?" + re.escape(self.end) + r"\n?", re.S)

    def wrap(self, body: str) -> str:
        """`body` between this section's markers, as a block of its own."""
        return f"{self.start}\n{body.strip(chr(10))}\n{self.end}\n"

    def find(self, document: str | None) -> str | None:
        found = self._pattern().search(document or "")
        return found.group(0) if found else None

    def splice(self, document: str, section: str) -> str:
        """`document` with this section replaced by `section` (appended when it has none)."""
        replaced, found = self._pattern().subn(lambda _: section, document, count=1)
        if found:
            return replaced
        return document.rstrip("\n") + "\n\n" + section if document.strip() else section

    def remove(self, document: str) -> str:
        return self._pattern().sub("", document, count=1)

    def carry_over(self, old_document: str | None, new_document: str) -> str:
        """The new document with the old one's copy of this section, in the new one's place for it
        (a placeholder), or at its end where it has none; unchanged where the old one had none."""
        kept = self.find(old_document)
        return new_document if kept is None else self.splice(new_document, kept)


HOST_CAPACITY = MarkedSection("host-capacity")
TRIED_AND_MEASURED = MarkedSection("tried-and-measured")
