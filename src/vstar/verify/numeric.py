"""Numeric verification: the value an answer finally states, within a tolerance of the label.

Only the stated final value counts: the number attached to a keyword ("final score: 65.6", "a difficulty of
3.2") in the conclusion, else the last sentence that states one, else the single number of the conclusion.
Numbers may be digits, words or fractions ("sixty-five point six", "3½"). A conclusion that gives a range
("between 60 and 70", "65 ± 3"), alternatives ("65 or 70", "70.5 (or 61.5)", "70.5; a second estimate: 61.5")
or two different values is rejected, and so is an answer that
states no number (the official verifier crashed on those).

```python
from vstar.verify.numeric import NumericVerifier
v = NumericVerifier(rel_tol=0.05)
v.verify_field("Judges gave 8.5s.\\nAnswer: final score 66", 65.6, "dive_score", keywords=["score"]).passed  # True
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vstar.verify.answer import (
    MAX_BACKTRACK_SENTENCES,
    NumberSpan,
    find_conclusion,
    find_numbers,
    is_negated,
    normalize_text,
    offers_second_answer,
    prepare_numeric_text,
    split_sentences,
)
from vstar.verify.base import FieldVerdict

# A value is attached to a keyword when it follows within this many characters in the same clause...
ATTACH_CHARS = 60
# ...or precedes it closely ("65.6 points", "a 3.2 difficulty").
ATTACH_BEFORE_CHARS = 12
_STOP_RE = re.compile(r"[.!?](?=\s|$)|[;,\n]|\band\b|\bwhile\b|\bwhereas\b")
_BEFORE_OK_RE = re.compile(r"^[\s(]*(?:[a-z]+\s*)?$")
_USABLE = ("value", "range", "alternative")
# Between a keyword and its value: only punctuation and linking words ("score: 65.6", "difficulty of about 3.2").
_TIGHT_RE = re.compile(
    r"^\W*(?:(?:is|was|of|at|about|around|approximately|roughly|estimated|would|should|will|be|a|an|the|final|"
    r"total|overall|likely|probably|circa|ca|equals|equal|to|=)\b\W*){0,6}$"
)
# A number right before its keyword: "3.2 difficulty", "87 points".
_ADJACENT_RE = re.compile(r"[ \t\-]*$")


@dataclass
class _Reading:
    values: list[NumberSpan]
    negated: list[NumberSpan]
    piece: str


def _keyword_re(keyword: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in keyword.lower().split()]
    return re.compile(r"\b" + r"\s+".join(words) + r"\w*")


class NumericVerifier:
    """Judges whether the value an answer finally states is within tolerance of the label.

    A value passes when `|found - expected| <= max(rel_tol * |expected|, abs_tol)` (a tolerance given as None
    counts as 0; both None means exact up to float noise).

    Args:
        rel_tol: relative tolerance (0.05 = within 5% of the label).
        abs_tol: absolute tolerance.
        exclude_prefixes: words that, right before a keyword, mean another quantity (with keyword "score",
            `("difficulty", "judge")` skips "difficulty score 3.2" and "judge scores 8.5").
        ignore_units: a number followed by one of these words counts something else and is never the value
            (`("somersaults", "twists")` skips the "3.5" of "3.5 somersaults").
    """

    def __init__(
        self,
        rel_tol: float | None = 0.05,
        abs_tol: float | None = None,
        exclude_prefixes: Sequence[str] = (),
        ignore_units: Sequence[str] = (),
    ):
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        self._unit = (
            re.compile(r"^\s*(?:" + "|".join(re.escape(u.lower()) for u in ignore_units) + r")\b")
            if ignore_units
            else None
        )
        self._exclude = re.compile(
            r"\b(?:" + "|".join(re.escape(w.lower()) for w in exclude_prefixes) + r")\w*\W*$"
            if exclude_prefixes
            else r"(?!)"
        )
        self._keyword_cache: dict[tuple[str, ...], list[re.Pattern[str]]] = {}

    def _patterns(self, keywords: Sequence[str]) -> list[re.Pattern[str]]:
        key = tuple(keywords)
        if key not in self._keyword_cache:
            self._keyword_cache[key] = [_keyword_re(k) for k in key if k.strip()]
        return self._keyword_cache[key]

    # -- reading ------------------------------------------------------------------------------------------------

    def _attached(self, text: str, patterns: list[re.Pattern[str]]) -> _Reading | None:
        """Values attached to the highest-priority keyword that has any in `text` (prepared text)."""
        if not patterns:
            return None
        numbers = [n for n in find_numbers(text) if n.kind in _USABLE and not self._counts_other(text, n)]
        if not numbers:
            return None
        for pattern in patterns:
            values: list[NumberSpan] = []
            negated: list[NumberSpan] = []
            for m in pattern.finditer(text):
                if self._exclude.search(text[max(0, m.start() - 30) : m.start()]):
                    continue
                hit = self._after(text, m.end(), numbers)
                before = self._before(text, m.start(), numbers)
                # "a 3.2 difficulty dive worth 87 points": a number right before the keyword beats one that
                # follows it loosely; "difficulty: 3.2" (tightly after) beats both.
                if before is not None and (hit is None or not self._tight(text, m.end(), hit[0])):
                    if hit is None or _ADJACENT_RE.match(text, before[0].end, m.start()):
                        hit = before
                if hit is None:
                    continue
                for n in hit:
                    (negated if is_negated(text, n.start, n.end) else values).append(n)
            if values or negated:
                return _Reading(values, negated, text)
        return None

    def _counts_other(self, text: str, n: NumberSpan) -> bool:
        return self._unit is not None and bool(self._unit.match(text, n.end))

    @staticmethod
    def _after(text: str, end: int, numbers: list[NumberSpan]) -> list[NumberSpan] | None:
        window_end = end + ATTACH_CHARS
        stop = _STOP_RE.search(text, end, window_end)
        limit = stop.start() if stop is not None else window_end
        found = [n for n in numbers if end <= n.start < limit]
        if not found:
            return None
        # The first value that is not negated ("score is not 70 but 65.6"), with its range/alternative partner.
        out: list[NumberSpan] = []
        for n in found:
            out.append(n)
            if not is_negated(text, n.start, n.end):
                if n.kind in ("range", "alternative"):
                    out.extend(x for x in found if x.kind == n.kind and x is not n and x not in out)
                break
        return out

    @staticmethod
    def _tight(text: str, end: int, n: NumberSpan) -> bool:
        return bool(_TIGHT_RE.match(text[end : n.start]))

    @staticmethod
    def _before(text: str, start: int, numbers: list[NumberSpan]) -> list[NumberSpan] | None:
        for n in reversed(numbers):
            if n.end <= start:
                if start - n.end <= ATTACH_BEFORE_CHARS and _BEFORE_OK_RE.match(text[n.end : start]):
                    return [n]
                return None
        return None

    def _read(self, answer: object, keywords: Sequence[str]) -> _Reading | None:
        conclusion = find_conclusion(answer)
        if not conclusion.text:
            return None
        patterns = self._patterns(keywords)
        piece = prepare_numeric_text(conclusion.text)
        # 1. A keyword-attached value in the conclusion.
        reading = self._attached(piece, patterns)
        if reading is not None:
            return reading
        # 2. The last sentence of the answer that attaches a value to the keyword.
        if patterns:
            sentences = split_sentences(prepare_numeric_text(conclusion.whole))
            for sentence in reversed(sentences[-40:]):
                reading = self._attached(sentence, patterns)
                if reading is not None:
                    return reading
        # 3. The numbers of the conclusion, else of the sentences just before it.
        for text in [conclusion.text, *conclusion.earlier()[:MAX_BACKTRACK_SENTENCES]]:
            text = prepare_numeric_text(text)
            numbers = [n for n in find_numbers(text) if n.kind in _USABLE and not self._counts_other(text, n)]
            if numbers:
                values = [n for n in numbers if not is_negated(text, n.start, n.end)]
                negated = [n for n in numbers if n not in values]
                return _Reading(values, negated, text)
            if patterns:
                break
        return None

    def _second_value(self, answer: object, keywords: Sequence[str]) -> str | None:
        """A sentence after the conclusion that offers a second value ("A second estimate of the score: 61.5")."""
        after = find_conclusion(answer).after
        if not after:
            return None
        patterns = self._patterns(keywords)
        for sentence in split_sentences(after)[:6]:
            if offers_second_answer(normalize_text(sentence)) is None:
                continue
            piece = prepare_numeric_text(sentence)
            if patterns:
                if self._attached(piece, patterns) is not None:
                    return sentence.strip()[:200]
            elif any(n.kind in _USABLE and not self._counts_other(piece, n) for n in find_numbers(piece)):
                return sentence.strip()[:200]
        return None

    # -- public API ---------------------------------------------------------------------------------------------

    def parse(self, answer: str, keywords: Sequence[str] = ()) -> float | None:
        """The final value the answer states, or None if it states none, a range, or conflicting values.

        Args:
            answer: the model's answer.
            keywords: phrases the value is attached to, highest priority first (e.g. `["final score", "score"]`).
        """
        reading = self._read(answer, keywords)
        if reading is None:
            return None
        values = {round(n.value, 9) for n in reading.values}
        if len(values) != 1 or any(n.kind != "value" for n in reading.values):
            return None
        if self._second_value(answer, keywords) is not None:
            return None
        return values.pop()

    def within(self, found: float, expected: float) -> bool:
        """Whether `found` is within tolerance of `expected`.

        Args:
            found: the stated value.
            expected: the label value.
        """
        tol = max((self.rel_tol or 0.0) * abs(expected), self.abs_tol or 0.0)
        return abs(found - expected) <= tol + 1e-9 * max(1.0, abs(expected))

    def verify_field(
        self, answer: str, expected: float, name: str = "value", keywords: Sequence[str] = ()
    ) -> FieldVerdict:
        """Judge the final stated value against the label.

        Args:
            answer: the model's answer (any string).
            expected: the label value.
            name: the label field, reported in the verdict.
            keywords: phrases the value is attached to, highest priority first.

        Returns:
            A `FieldVerdict` with reason `match`, `out_of_tolerance`, `conflict`, `hedged`, `negated` or
            `no_value`.
        """
        try:
            expected_f = float(expected)
        except (TypeError, ValueError):
            return FieldVerdict(name, False, str(expected), None, "bad_label", "The label is not a number.")
        exp = f"{expected_f:g}"
        if not math.isfinite(expected_f):
            return FieldVerdict(name, False, exp, None, "bad_label", "The label is not a finite number.")
        reading = self._read(answer, keywords)
        if reading is None:
            return FieldVerdict(name, False, exp, None, "no_value", "The conclusion states no value.")
        values = reading.values
        distinct = sorted({round(n.value, 9) for n in values})
        found = ", ".join(f"{v:g}" for v in distinct) or None
        if not values:
            return FieldVerdict(name, False, exp, None, "negated", "The conclusion only rejects values.")
        if any(n.kind == "range" for n in values):
            return FieldVerdict(name, False, exp, found, "hedged", "The conclusion gives a range, not a value.")
        if any(n.kind == "alternative" for n in values):
            return FieldVerdict(name, False, exp, found, "hedged", "The conclusion offers alternative values.")
        if len(distinct) > 1:
            return FieldVerdict(name, False, exp, found, "conflict", f"The conclusion states several values: {found}.")
        value = distinct[0]
        second = self._second_value(answer, keywords)
        if second is not None:
            return FieldVerdict(name, False, exp, found, "hedged", f"The answer offers a second value: {second!r}.")
        if self.within(value, expected_f):
            return FieldVerdict(name, True, exp, found, "match", f"{found} is within tolerance of {exp}.")
        return FieldVerdict(name, False, exp, found, "out_of_tolerance", f"{found} is not within tolerance of {exp}.")
