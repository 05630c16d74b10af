"""Ordered sequence verification for FineDiving sub-actions, tolerant to naming variants.

FineDiving names sub-actions tersely ("Inward", "3.5 Soms.Tuck", "1.5 Twists", "Entry"); answers write them
many ways ("3.5 somersaults tuck", "three and a half somersaults in the tuck position", "3½ tucked
somersaults", "one and a half twists", "armstand back"). Both sides are parsed into the same canonical items
(take-off group, somersaults with count and position, twists with count, entry) and compared in order.

```python
from vstar.verify.sequence import SequenceVerifier
SequenceVerifier().verify_field(
    "Answer: an inward dive with three and a half somersaults in the tuck position, then a clean entry.",
    ["Inward", "3.5 Soms.Tuck", "Entry"],
).passed  # True
```
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from vstar.verify.answer import (
    find_conclusion,
    find_numbers,
    is_negated,
    normalize_text,
    prepare_numeric_text,
    split_sentences,
)
from vstar.verify.base import FieldVerdict

Item = tuple  # ("group", name) | ("som", count, position) | ("twist", count) | ("entry",)

_GROUPS = {
    "forward": "Forward",
    "forwards": "Forward",
    "front": "Forward",
    "back": "Back",
    "backward": "Back",
    "backwards": "Back",
    "reverse": "Reverse",
    "inward": "Inward",
}
_ARM = frozenset({"arm", "armstand", "handstand", "arms"})
_SOM = frozenset({"som", "soms", "somersault", "somersaults", "somersaulting", "somie", "somies", "salto", "saltos"})
_TWIST = frozenset({"twist", "twists", "twisting", "twisted"})
_POSITIONS = {
    "tuck": "Tuck",
    "tucked": "Tuck",
    "tucking": "Tuck",
    "pike": "Pike",
    "piked": "Pike",
    "piking": "Pike",
    "straight": "Straight",
    "layout": "Straight",
    "laid": "Straight",
    "stretched": "Straight",
    "extended": "Straight",
}
_MULTIPLIERS = {"single": 1.0, "double": 2.0, "triple": 3.0, "quadruple": 4.0}
_ENTRY = frozenset({"entry", "entries", "enters", "entering", "rip"})
# Where a sequence is announced; the sequence ends where the next labelled quantity starts.
_SEQUENCE_KEY_RE = re.compile(r"\b(?:sequence|sub\s*actions?|steps|elements)\b")
_SEQUENCE_END_RE = re.compile(r"\b(?:difficulty|degree|score|points|dd)\b|[\n;]")
_WORD_RE = re.compile(r"[a-z]+")
MAX_ITEMS = 24


def item_name(item: Item) -> str:
    """The FineDiving name of a canonical item ("3.5 Soms.Tuck", "1 Twist", "Arm.Back", "Entry").

    Args:
        item: a canonical item.
    """
    kind = item[0]
    if kind == "group":
        return item[1]
    if kind == "som":
        count = f"{item[1]:g}"
        return f"{count} {'Som' if item[1] <= 1 else 'Soms'}.{item[2] or '?'}"
    if kind == "twist":
        return f"{item[1]:g} {'Twist' if item[1] <= 1 else 'Twists'}"
    return "Entry"


def parse_items(text: str) -> list[Item]:
    """Canonical sub-action items in a text, in order of appearance; negated ones are skipped.

    Args:
        text: any text ("Inward, 3.5 Soms.Tuck, Entry", "a back dive with one and a half twists ...").
    """
    return list(_parse_items(text)[0])


def is_hedged_sequence(text: str) -> bool:
    """Whether a text offers alternative sub-actions ("3.5 Soms.Tuck or 3.5 Soms.Pike", "Inward (or Back)",
    "2.5 or 3.5 somersaults", "pike or tuck").

    Args:
        text: any text.
    """
    return _parse_items(text)[1]


# Between two items: a connector that offers the second instead of the first.
_ALTERNATIVE_ITEM_RE = re.compile(r"\b(?:or|possibly|perhaps|maybe|alternatively|otherwise)\b|/")


@lru_cache(maxsize=1024)
def _parse_items(text: str) -> tuple[tuple[Item, ...], bool]:
    """The canonical items of a text and whether it offers alternatives between them."""
    prepared = prepare_numeric_text(text)
    # "Soms.Tuck", "Arm.Back": a dot between letters separates words.
    prepared = re.sub(r"(?<=[a-z])\.(?=[a-z])", " ", prepared)
    numbers = [n for n in find_numbers(prepared) if n.kind in ("value", "range", "alternative")]
    hedged = any(n.kind == "alternative" for n in numbers)
    tokens: list[tuple[str, object, int, int]] = []
    covered = [(n.start, n.end) for n in numbers]
    for n in numbers:
        tokens.append(("num", n.value, n.start, n.end))
    for m in _WORD_RE.finditer(prepared):
        if any(s <= m.start() < e for s, e in covered):
            continue
        word = m.group(0)
        if word in _MULTIPLIERS:
            tokens.append(("num", _MULTIPLIERS[word], m.start(), m.end()))
        else:
            tokens.append(("word", word, m.start(), m.end()))
        if len(tokens) > 400:
            break
    tokens.sort(key=lambda t: t[2])
    items: list[Item] = []
    ends: list[int] = []  # where each item ends, to read the words between it and the next
    i = 0
    n = len(tokens)

    def add(item: Item, start: int, end: int) -> None:
        nonlocal hedged
        if ends:
            between = prepared[ends[-1] : start]
            if len(between) < 40 and _ALTERNATIVE_ITEM_RE.search(between) and not re.search(r"\bnot\b", between):
                hedged = True
        if item[0] == "som" and item[2] == "?":
            hedged = True
        items.append(item)
        ends.append(end)

    while i < n and len(items) < MAX_ITEMS:
        kind, value, start, end = tokens[i]
        if kind == "num":
            item, j = _count_item(tokens, i)
            if item is not None:
                if not is_negated(prepared, start, tokens[j - 1][3]):
                    add(item, start, tokens[j - 1][3])
                i = j
                continue
        elif value in _ARM:
            group = next((tokens[k][1] for k in range(i + 1, min(n, i + 3)) if tokens[k][1] in _GROUPS), None)
            if group is not None and not is_negated(prepared, start, end):
                k = next(k for k in range(i + 1, n) if tokens[k][1] == group)
                add(("group", "Arm." + _GROUPS[group]), start, tokens[k][3])
                i = k + 1
                continue
        elif value in _GROUPS:
            if not is_negated(prepared, start, end):
                add(("group", _GROUPS[value]), start, end)
        elif value in _ENTRY or (value == "enter" and i + 1 < n):
            if not is_negated(prepared, start, end) and not (items and items[-1] == ("entry",)):
                add(("entry",), start, end)
        i += 1
    return tuple(items), hedged


def _count_item(tokens: list[tuple[str, object, int, int]], i: int) -> tuple[Item | None, int]:
    """A somersault or twist item starting at the number token i ("3.5 soms tuck", "1.5 twists")."""
    count = float(tokens[i][1])  # type: ignore[arg-type]
    n = len(tokens)
    position = None
    for k in range(i + 1, min(n, i + 4)):
        word = tokens[k][1]
        if tokens[k][0] == "num":
            break
        if word in _POSITIONS:
            position = _POSITIONS[word]
        elif word in _SOM:
            position = position or _position_after(tokens, k + 1)
            if position is None and i >= 1 and tokens[i - 1][1] in _POSITIONS:
                position = _POSITIONS[str(tokens[i - 1][1])]
            return ("som", count, position), k + 1
        elif word in _TWIST:
            return ("twist", count), k + 1
    return None, i + 1


def _position_after(tokens: list[tuple[str, object, int, int]], k: int) -> str | None:
    found: set[str] = set()
    for j in range(k, min(len(tokens), k + 5)):
        if tokens[j][0] == "num" or tokens[j][1] in _TWIST or tokens[j][1] in _SOM or tokens[j][1] in _GROUPS:
            break
        if tokens[j][1] in _POSITIONS:
            found.add(_POSITIONS[str(tokens[j][1])])
    if len(found) > 1:
        # "pike or tuck": no position is committed to.
        return "?"
    return found.pop() if found else None


def _sequence_segment(text: str) -> str:
    """The part of a conclusion after "sequence:" and before the next labelled quantity, else all of it."""
    low = text.lower()
    m = _SEQUENCE_KEY_RE.search(low)
    if m is None:
        return text
    end = _SEQUENCE_END_RE.search(low, m.end())
    return text[m.end() : end.start() if end is not None else len(text)]


class SequenceVerifier:
    """Judges whether an answer's conclusion states the expected sub-actions in the expected order.

    Args:
        optional_last: item names the answer may leave out at the end ("Entry": every dive ends with one).
        ignore: label item names that are not sub-actions ("Background").
    """

    def __init__(self, optional_last: Sequence[str] = ("Entry",), ignore: Sequence[str] = ("Background",)):
        self.optional_last = {tuple(x) for name in optional_last for x in parse_items(name)}
        self.ignore = {name.lower() for name in ignore}

    def expected_items(self, expected: Sequence[str]) -> list[Item]:
        """Canonical items of a label's sub-action names.

        Args:
            expected: FineDiving sub-action names in temporal order.
        """
        out: list[Item] = []
        for name in expected:
            if str(name).strip().lower() in self.ignore:
                continue
            out.extend(parse_items(str(name)))
        return out

    def parse(self, answer: str) -> list[str] | None:
        """The sub-action names the answer concludes, in order; None if it states none.

        Args:
            answer: the model's answer.
        """
        items, hedged = self._answer_items(answer)
        return [item_name(x) for x in items] if items and not hedged else None

    def _answer_items(self, answer: object) -> tuple[list[Item], bool]:
        """The items the answer concludes, and whether it offers alternatives among them."""
        conclusion = find_conclusion(answer)
        if not conclusion.text:
            return [], False
        items, hedged = _parse_items(_sequence_segment(conclusion.text))
        if items:
            return list(items), hedged
        # The conclusion states only the numbers: the sequence is the last run of sentences that describe one.
        run: list[tuple[Item, ...]] = []
        for sentence in reversed(split_sentences(conclusion.whole)[-40:]):
            found, alternative = _parse_items(_sequence_segment(sentence))
            if found:
                run.append(found)
                hedged = hedged or alternative
            elif run:
                break
        return [x for found in reversed(run) for x in found], hedged

    def verify_field(self, answer: str, expected: Sequence[str], name: str = "sub_actions") -> FieldVerdict:
        """Judge the answer's sub-action sequence against the label's, in order.

        Args:
            answer: the model's answer (any string).
            expected: the label's sub-action names in temporal order.
            name: the label field, reported in the verdict.

        Returns:
            A `FieldVerdict` with reason `match`, `order`, `mismatch`, `hedged` or `no_sequence`.
        """
        if isinstance(expected, str):
            expected = [x.strip() for x in expected.split(",")]
        want = self.expected_items(expected)
        exp_text = ", ".join(str(x) for x in expected)
        got, hedged = self._answer_items(answer)
        found = ", ".join(item_name(x) for x in got) or None
        if not got:
            return FieldVerdict(name, False, exp_text, None, "no_sequence", "The answer states no sub-actions.")
        if hedged:
            return FieldVerdict(name, False, exp_text, found, "hedged", "The answer offers alternative sub-actions.")
        if want and got[-1] != want[-1] and want[-1] in self.optional_last:
            want = want[:-1]
        if got == want:
            return FieldVerdict(name, True, exp_text, found, "match", "The sub-actions match in order.")
        if sorted(map(repr, got)) == sorted(map(repr, want)):
            return FieldVerdict(name, False, exp_text, found, "order", "The sub-actions are right but out of order.")
        return FieldVerdict(name, False, exp_text, found, "mismatch", f"Expected {exp_text}; the answer has {found}.")


# Separators between the steps of a written sequence ("crack eggs, whisk, then fry", "1. a 2. b", "a -> b").
_STEP_SPLIT_RE = re.compile(r"\s*(?:[,;\n]|->|→|=>|\bthen\b|\band\s+then\b|\bafter\s+that\b|\bfollowed\s+by\b)\s*")
_STEP_NUMBER_RE = re.compile(r"(?:^|\s)\(?\d{1,2}[.)]\s+")
_STEP_FILLER = frozenset("first firstly second secondly third next finally lastly afterwards and then step".split())
_STEP_HEDGE_RE = re.compile(r"\bor\b|/|\b(?:possibly|perhaps|maybe|alternatively)\b")
_STEP_WORD_RE = re.compile(r"[^\W_]+")


def _step_stems(text: str) -> frozenset[str]:
    from vstar.verify.answer import stem

    words = _STEP_WORD_RE.findall(normalize_text(text))
    return frozenset(stem(w) for w in words if w not in _STEP_FILLER and w not in _STEP_STOPWORDS)


_STEP_STOPWORDS = frozenset("a an the it its them this that is are was were be to of on in with into".split())


class StepSequenceVerifier:
    """Judges whether an answer states a label's steps (any names) in order: `["crack eggs", "whisk", "fry"]`.

    The conclusion (after `<key>:` when the answer labels it, e.g. "steps: ...") is cut into steps at commas,
    semicolons, "then", arrows and numbered items; a step matches a label item when it contains the item's words
    (inflections and articles aside) or is a close spelling of it.

    Args:
        keys: words that announce the sequence in an answer ("steps", "sequence").
        threshold: rapidfuzz ratio (0-100) above which a step reads as a misspelt item.

    ```python
    from vstar.verify.sequence import StepSequenceVerifier
    steps = ["crack eggs", "whisk", "fry"]
    StepSequenceVerifier().verify_field("Answer: steps: crack the eggs, whisk them, then fry", steps).passed  # True
    ```
    """

    def __init__(self, keys: Sequence[str] = ("steps", "sequence", "order"), threshold: float = 85.0):
        self.keys = [k for k in keys if k.strip()]
        self.threshold = float(threshold)
        self._key_re = (
            re.compile(
                r"(?i)\b(?:" + "|".join(re.escape(k).replace(r"\ ", r"[\s_]+") for k in self.keys) + r")\s*[:=]"
            )
            if self.keys
            else None
        )

    def _segment(self, answer: object) -> str:
        text = find_conclusion(answer).text
        if self._key_re is not None:
            m = self._key_re.search(text)
            if m is not None:
                text = text[m.end() :]
                # The next labelled field ("score: ...") ends the sequence.
                nxt = re.search(r"(?:^|[.;\n]\s*)[A-Za-z][\w ]{0,30}:", text)
                text = text[: nxt.start()] if nxt else text
        return text.strip().rstrip(".")

    def steps(self, answer: object) -> list[str]:
        """The steps an answer's conclusion states, in order.

        Args:
            answer: the model's answer.
        """
        segment = _STEP_NUMBER_RE.sub(", ", self._segment(answer))
        return [p.strip(" .*_") for p in _STEP_SPLIT_RE.split(segment) if _step_stems(p)]

    def _match(self, step: str, expected: Sequence[str]) -> int | None:
        from rapidfuzz import fuzz

        words = _step_stems(step)
        best, best_size = None, 0
        for i, item in enumerate(expected):
            want = _step_stems(item)
            if want and want <= words and len(want) > best_size:
                best, best_size = i, len(want)
        if best is None:
            scores = [fuzz.ratio(normalize_text(step), normalize_text(item)) for item in expected]
            if scores and max(scores) >= self.threshold:
                best = scores.index(max(scores))
        return best

    def parse(self, answer: str, expected: Sequence[str] | None = None) -> list[str] | None:
        """The stated steps (as the label's item names where they match one); None if none or hedged.

        Args:
            answer: the model's answer.
            expected: the label's items, to name the steps by.
        """
        if _STEP_HEDGE_RE.search(self._segment(answer)) and not any(" or " in str(e) for e in expected or ()):
            return None
        steps = self.steps(answer)
        if not steps:
            return None
        if not expected:
            return steps
        named = []
        for step in steps:
            k = self._match(step, [str(e) for e in expected])
            named.append(str(expected[k]) if k is not None else step)
        return named

    def verify_field(self, answer: str, expected: Sequence[str], name: str = "steps") -> FieldVerdict:
        """Judge the answer's steps against the label's, in order (no step missing, none extra).

        Args:
            answer: the model's answer.
            expected: the label's steps in order (a list, or one text with commas).
            name: the label field, reported in the verdict.

        Returns:
            A `FieldVerdict` with reason `match`, `order`, `mismatch`, `hedged` or `no_sequence`.
        """
        if isinstance(expected, str):
            expected = [x.strip() for x in expected.split(",") if x.strip()]
        expected = [str(e) for e in expected]
        exp_text = ", ".join(expected)
        steps = self.steps(answer)
        found = ", ".join(steps) or None
        if not steps:
            return FieldVerdict(name, False, exp_text, None, "no_sequence", "The answer states no steps.")
        if _STEP_HEDGE_RE.search(self._segment(answer)) and not any(" or " in e for e in expected):
            return FieldVerdict(name, False, exp_text, found, "hedged", "The answer offers alternative steps.")
        matched = [self._match(step, expected) for step in steps]
        if matched == list(range(len(expected))):
            return FieldVerdict(name, True, exp_text, found, "match", "The steps match in order.")
        if None not in matched and sorted(matched) == list(range(len(expected))):
            return FieldVerdict(name, False, exp_text, found, "order", "The steps are right but out of order.")
        return FieldVerdict(name, False, exp_text, found, "mismatch", f"Expected {exp_text}; the answer has {found}.")
