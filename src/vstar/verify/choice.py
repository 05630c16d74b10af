"""Multiple-choice answers: which option an answer chooses, by letter or by option text.

```python
from vstar.verify.choice import parse_choice
parse_choice("The man speeds up at the end.\\nAnswer: (B)", ["The man walks", "The man runs"])  # 'B'
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vstar.verify.answer import (
    MAX_CONCLUSION_CHARS,
    find_conclusion,
    is_negated,
    normalize_text,
    offers_second_answer,
    split_sentences,
    stem,
)
from vstar.verify.base import FieldVerdict

# Words that introduce a choice: "option B", "choice (c)", "letter D".
_CHOICE_WORDS = r"(?i:(?:option|choice|letter|alternative)s?)"
# Words after which a bare letter reads as a choice ("B is correct", "B because ...").
_LETTER_FOLLOWERS = (
    r"(?i:is|are|was|were|seems?|appears?|looks?|would|should|must|could|might|can|because|since|as|and|or|but|which|"
    r"fits?|matches|describes?)"
)
_PREPOSITIONS = frozenset("in on at to of with from by for into onto over under".split())
_STOPWORDS = frozenset("a an the is are was were be been being it its this that these those".split())
_WORD_RE = re.compile(r"[^\W_]+")
# Decoration around a whole answer: "**B**", "(B)", "'B'.", "B."
_DECORATION = " \t\n*_`'\"()[]{}<>.,:;!?-"
# A choice at the very start of a piece: "B", "B)", "(B)", "B.", "B:", "[B]", "B - text", "**B**: text".
_LEADING_RE = re.compile(r"^[\s*_#>`\"']*[(\[]?([A-Za-z0-9])(?:[)\].:]|\s+[-–—]\s|\s*$|\*\*)")
# Where a model writes its final answer when it gives no designated line: a bounded tail is enough.
_MAX_WHOLE_CHARS = 300


class _Ambiguous(Exception):
    """Two or more options named as the answer."""


def _option_keys(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Options as {KEY: text} with upper-case keys; a sequence is lettered A, B, C, ..."""
    if isinstance(options, Mapping):
        items = [(str(k).strip().upper(), str(v)) for k, v in options.items()]
    else:
        items = [(chr(ord("A") + i), str(v)) for i, v in enumerate(options)]
    keys = dict(items)
    if len(keys) != len(items) or "" in keys:
        raise ValueError(f"Option keys must be distinct and non-empty; got {[k for k, _ in items]}.")
    return keys


def _letter_negated(piece: str, start: int, end: int) -> bool:
    """Whether the letter at `piece[start:end]` is negated ("not A", "rather than (C)", "A is wrong")."""
    before = normalize_text(piece[:start])
    after = normalize_text(piece[end:])
    norm = f"{before} choice {after}"
    return is_negated(norm, len(before) + 1, len(before) + 7)


def _letter_mentions(piece: str, keys: Mapping[str, str]) -> set[str]:
    """The option keys a piece names as letters (not negated)."""
    letters = "".join(sorted({k for k in keys if len(k) == 1 and k.isalnum()}))
    if not letters:
        return set()
    cls = "[" + re.escape(letters) + re.escape(letters.lower()) + "]"
    upper = "[" + re.escape(letters) + "]"
    end = r"(?:\s*$|[).\]:,;!?]|\s+[-–—]\s|\s+" + _LETTER_FOLLOWERS + r"\b)"
    patterns = [
        # "(B)", "[b]"
        r"[(\[{](" + cls + r")[)\]}]",
        # "option B", "choice c", "options: D"
        r"\b" + _CHOICE_WORDS + r"\s*[:=]?\s*[(\[]?(" + cls + r")(?![\w'])",
        # "answer: b.", "answer is c" (a lower-case letter only before punctuation or the end: "the answer is a man")
        r"\b(?i:answer\s*(?:is|would\s+be|should\s+be|must\s+be|[:=]))\s*(" + cls + r")(?=" + end + r")",
        # a bare capital before the end, punctuation or a verb: "I'd pick C.", "B is correct"
        r"(?<![\w'\-])(" + upper + r")(?=" + end + r")",
    ]
    found: set[str] = set()
    for pattern in patterns:
        for m in re.finditer(pattern, piece):
            if not _letter_negated(piece, m.start(1), m.end(1)):
                found.add(m.group(1).upper())
    return found


def _content_tokens(text: str) -> list[tuple[str, int, int]]:
    """Stemmed content words of normalised text with their positions (articles and copulas dropped)."""
    return [(_stem(m.group(0)), m.start(), m.end()) for m in _WORD_RE.finditer(text) if m.group(0) not in _STOPWORDS]


def _stem(word: str) -> str:
    # Adverbs read as their adjective: "normally" as "normal", "slowly" as "slow".
    return stem(word[:-2] if len(word) > 5 and word.endswith("ly") else word)


def _text_mentions(piece: str, keys: Mapping[str, str]) -> set[str]:
    """The options whose text a piece states, read as stemmed content words.

    An option counts when the piece states its whole text (in order), or all the words that only this option has
    ("running" of "The man is running" among other things the man does; prepositions aside). Negated mentions and a
    mention inside a longer one ("walking" inside "walking slowly") are dropped.
    """
    norm = normalize_text(piece)
    tokens = _content_tokens(norm)
    words = [t[0] for t in tokens]
    options = {key: [t[0] for t in _content_tokens(normalize_text(text))] for key, text in keys.items()}
    spans: list[tuple[int, int, str, bool]] = []
    for key, phrase in options.items():
        size = len(phrase)
        for i in range(len(words) - size + 1) if size else ():
            if words[i : i + size] == phrase:
                spans.append((i, i + size, key, is_negated(norm, tokens[i][1], tokens[i + size - 1][2])))
    for key, phrase in options.items():
        others = {w for k, v in options.items() if k != key for w in v}
        unique = [w for w in dict.fromkeys(phrase) if w not in others]
        unique = [w for w in unique if w not in _PREPOSITIONS] or unique
        positions = []
        for word in unique:
            found = [i for i, w in enumerate(words) if w == word and not is_negated(norm, tokens[i][1], tokens[i][2])]
            if not found:
                break
            positions.append(found[0])
        if unique and len(positions) == len(unique):
            spans.append((min(positions), max(positions) + 1, key, False))
    kept = set()
    for s, e, key, negated in spans:
        inside_longer = any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _, _ in spans)
        if not negated and not inside_longer:
            kept.add(key)
    return kept


def _resolve(piece: str, keys: Mapping[str, str]) -> str | None:
    """The one option a piece names; None if it names none; raises `_Ambiguous` if it names several."""
    piece = piece.strip()
    if not piece:
        return None
    bare = piece.strip(_DECORATION).upper()
    if bare in keys:
        return bare
    leading = _LEADING_RE.match(piece)
    if leading and leading.group(1).upper() in keys:
        # "B. Option A is similar, but ...": the leading letter decides unless its own sentence names another.
        first = split_sentences(piece)[0] if split_sentences(piece) else piece
        if _letter_mentions(first, keys) - {leading.group(1).upper()}:
            raise _Ambiguous
        return leading.group(1).upper()
    for mentions in (_letter_mentions(piece, keys), _text_mentions(piece, keys)):
        if len(mentions) == 1:
            return mentions.pop()
        if len(mentions) > 1:
            raise _Ambiguous
    return None


def parse_choice(answer: str | None, options: Mapping[str, str] | Sequence[str]) -> str | None:
    """The option an answer chooses: its key (upper case), or `None` if it names none or several.

    Reads a letter ("B", "(B)", "B.", "b)", "Answer: B", "The answer is option B", "**B**", "\\boxed{B}"), a letter
    with text ("B) The man is walking") and the option text alone ("The man is walking", or "He walks" when only that
    option says "walking"; compared as words after case, punctuation, articles and inflections are normalised; a
    mention of a shorter option inside a longer one counts as the longer). Negated mentions ("not A", "rather than
    C", "A is wrong") are skipped.

    Only the conclusion counts: the designated final answer ("Answer: ...", "The answer is ...") if there is one,
    else the last conclusive sentence (or first the last line, when it opens with a letter: "B. Because ..."), then
    the last line and, for a short answer, the whole text. The first of these that names any option decides; naming
    two or more ("A or B", "B and D") gives `None`. A leading letter ("B. ...", "(C) ...") wins over mentions in
    later sentences, and a letter wins over option text.

    Args:
        answer: the model's answer.
        options: {key: option text} ("A": "...", ...), or the option texts in order (keys A, B, C, ...).
    """
    return read_choice(answer, options)[0]


def read_choice(answer: str | None, options: Mapping[str, str] | Sequence[str]) -> tuple[str | None, bool]:
    """The option an answer chooses (see `parse_choice`) and whether it named several.

    Args:
        answer: the model's answer.
        options: {key: option text}, or the option texts in order (keys A, B, C, ...).

    Returns:
        `(key, False)` for one option; `(None, True)` when the conclusion names two or more; `(None, False)` for none.
    """
    keys = _option_keys(options)
    if not answer or not str(answer).strip():
        return None, False
    text = str(answer).strip()
    conclusion = find_conclusion(text)
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    leading = _LEADING_RE.match(last)
    if not conclusion.designated and leading and leading.group(1).upper() in keys:
        # "B. Option A is close, but ...": a final line that opens with a letter answers with it.
        pieces = [last[:MAX_CONCLUSION_CHARS], conclusion.text]
    else:
        pieces = [conclusion.text, last[-MAX_CONCLUSION_CHARS:]]
    if len(text) <= _MAX_WHOLE_CHARS:
        pieces.append(text)
    seen: set[str] = set()
    for piece in pieces:
        if not piece or piece in seen:
            continue
        seen.add(piece)
        try:
            choice = _resolve(piece, keys)
        except _Ambiguous:
            return None, True
        if choice is not None:
            return choice, False
    return None, False


def option_keys(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Options as {KEY: text} with upper-case keys; a sequence is lettered A, B, C, ...

    Args:
        options: {key: text} or the texts in order.
    """
    return _option_keys(options)


def reference_key(reference: Any, options: Mapping[str, str] | Sequence[str]) -> str:
    """The key of a correct option given as its key ("B", "(B)"), its text, or its 0-based index (1 or "1").

    Args:
        reference: the correct option.
        options: {key: text} or the texts in order.
    """
    keys = _option_keys(options)
    if isinstance(reference, int) and not isinstance(reference, bool) and 0 <= reference < len(keys):
        return list(keys)[reference]
    ref = str(reference).strip()
    if ref.upper() in keys:
        return ref.upper()
    key = parse_choice(ref, keys)
    if key is None and ref.isdigit() and int(ref) < len(keys):
        # A 0-based index written as text (a table column that mixes letters and indices is read as text).
        key = list(keys)[int(ref)]
    if key is None:
        raise ValueError(f"Reference {reference!r} names none of the options {list(keys)}.")
    return key


def options_text(options: Mapping[str, str] | Sequence[str]) -> str:
    """The options as the question lists them: one `A. text` line per option.

    Args:
        options: {key: text} or the texts in order.
    """
    return "\n".join(f"{key}. {text}" for key, text in _option_keys(options).items())


_HEDGE_WORDS_RE = re.compile(r"\b(?:or|either|possibly|perhaps|maybe|alternatively)\b|/")


def _second_choice(answer: object, keys: Mapping[str, str], choice: str) -> str | None:
    """Another option the answer offers after its conclusion ("Answer: B\nAlternatively, C."), or None."""
    after = find_conclusion(answer).after
    if not after:
        return None
    match = offers_second_answer(normalize_text(after))
    if match is None:
        return None
    rest = normalize_text(after)[match.end() :]
    try:
        other = _resolve(rest.strip(" ,:;"), keys)
    except _Ambiguous:
        return "several options"
    return other if other is not None and other != choice else None


class ChoiceVerifier:
    """Judges whether an answer chooses the correct option, by letter ("B", "(B)", "Answer: B") or by option text.

    ```python
    from vstar.verify.choice import ChoiceVerifier
    options = {"A": "The man walks", "B": "The man runs"}
    ChoiceVerifier().verify_field("He is clearly running.\\nAnswer: (B)", "B", options).passed  # True
    ```
    """

    def verify_field(
        self, answer: str, expected: Any, options: Mapping[str, str] | Sequence[str], name: str = "answer"
    ) -> FieldVerdict:
        """Judge the chosen option against the correct one.

        Args:
            answer: the model's answer.
            expected: the correct option: key, index or text.
            options: {key: text} or the texts in order.
            name: the label field, reported in the verdict.

        Returns:
            A `FieldVerdict` with reason `match`, `mismatch`, `hedged` (two options offered), `multiple` (two named
            without offering a choice between them) or `no_choice`.
        """
        keys = _option_keys(options)
        want = reference_key(expected, keys)
        shown = f"{want}. {keys[want]}"
        choice, several = read_choice(answer, keys)
        if several:
            conclusion = normalize_text(find_conclusion(answer).text)
            reason = "hedged" if _HEDGE_WORDS_RE.search(conclusion) or not conclusion else "multiple"
            return FieldVerdict(name, False, shown, None, reason, "The conclusion names more than one option.")
        if choice is None:
            return FieldVerdict(name, False, shown, None, "no_choice", "The conclusion chooses none of the options.")
        found = f"{choice}. {keys[choice]}"
        other = _second_choice(answer, keys, choice)
        if other is not None:
            return FieldVerdict(
                name, False, shown, found, "hedged", f"The answer offers {other} as a second answer beside {choice}."
            )
        if choice == want:
            return FieldVerdict(name, True, shown, found, "match", f"The answer chooses {want}.")
        return FieldVerdict(name, False, shown, found, "mismatch", f"The answer chooses {choice}, not {want}.")
