"""What an import left out, and why: counts per reason with the first few examples.

Every importer skips what it cannot turn into a valid pool row (an unreadable file, an image
without annotation, a box outside its image, a slice without tumour) instead of stopping, and
records it here; the ledger is printed at the end of the command and returned by the Python
function, so that a team sees at once whether 3 or 3,000 images were dropped.
"""
from __future__ import annotations

from collections import Counter

from .._display import shown

EXAMPLES_PER_REASON = 3


class SkipLedger:
    """Counts per reason, in the order reasons first occurred, with up to three examples each.

    skip(reason, example):  something was left out of the pool
    note(reason, example):  something was kept but is worth knowing (a box clipped to its image,
                            a labelled image without ROI); printed apart from the skips
    """

    def __init__(self):
        self.skipped: Counter = Counter()
        self.noted: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, example: str = "") -> None:
        self._count(self.skipped, reason, example)

    def note(self, reason: str, example: str = "") -> None:
        self._count(self.noted, reason, example)

    def _count(self, counter: Counter, reason: str, example: str) -> None:
        counter[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if example and len(shown) < EXAMPLES_PER_REASON:
            shown.append(str(example))

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def lines(self) -> list[str]:
        """One line per reason, skips first: '  12  image without annotation (e.g. a.png, b.png)'."""
        out = []
        for title, counter in (("Skipped", self.skipped), ("Noted (kept)", self.noted)):
            if not counter:
                continue
            out.append(f"{title}:")
            width = len(str(max(counter.values())))
            for reason, count in counter.items():
                examples = self.examples.get(reason) or []
                more = f" (e.g. {', '.join(map(shown, examples))})" if examples else ""
                out.append(f"  {count:>{width}}  {reason}{more}")
        return out

    def to_dict(self) -> dict:
        """JSON-able: {"skipped": {reason: count}, "noted": {...}, "examples": {reason: [...]}}."""
        return {"skipped": dict(self.skipped), "noted": dict(self.noted),
                "examples": {r: list(e) for r, e in self.examples.items()}}
