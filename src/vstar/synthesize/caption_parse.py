"""Reading a teacher's raw caption output: the usable text, or why there is none.

Teachers wrap their text in chat artefacts (special tokens, a leading "Description:" or "**Summary**", code
fences), and small or overloaded ones fail in recognisable ways: nothing at all, a refusal, a loop repeating a
phrase, JSON instead of prose, or bytes that are not words. `clean_caption` keeps the text of a usable answer and
names the failure of any other; `vstar caption` keeps the failures in its `rejected` config with that reason.

```python
from vstar.synthesize.caption_parse import clean_caption
clean_caption("**Description:** A red square moves left.<|im_end|>")  # ('A red square moves left.', None)
clean_caption("the the the the the the the the the the")[1]  # 'repetition: ...'
```
"""

from __future__ import annotations

import re

# Fewer words than this is not a description of anything.
MIN_WORDS = 3
# A word repeated this many times in a row is a decoding loop, not prose.
MAX_RUN = 6
# Long answers whose distinct words are this small a share of all words loop on a phrase.
MIN_DISTINCT_SHARE = 0.25
LOOP_MIN_WORDS = 24
# Letters must be at least this share of the visible characters.
MIN_LETTER_SHARE = 0.5

_SPECIAL_TOKEN_RE = re.compile(r"<\|[^|<>]{1,40}\|>|</?s>|<pad>|<unk>")
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_LEAD_RE = re.compile(
    r"^\s*(?:#+\s*)?[*_]*\s*(?:assistant|answer|caption|description|summary|video description|clip description|"
    r"detailed description|overall description)\s*[*_]*\s*[:\-–]\s*[*_]*\s*",
    re.IGNORECASE,
)
_REFUSAL_RE = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i am unable|i'?m unable|as an ai\b|unfortunately, i)",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def clean_caption(raw: str | None) -> tuple[str | None, str | None]:
    """The usable text of a raw caption output, or `None` and the reason it cannot be used.

    Args:
        raw: the teacher's output as generated.

    Returns:
        `(text, None)` for a usable answer (artefacts stripped, whitespace collapsed), else `(None, reason)` with
        reason `empty`, `too short: ...`, `refusal: ...`, `repetition: ...`, `not prose: ...` or `garbled: ...`.
    """
    if raw is None or not isinstance(raw, str):
        return None, "empty: no output"
    text = _SPECIAL_TOKEN_RE.sub(" ", raw)
    text = _FENCE_RE.sub("", text.strip())
    for _ in range(2):  # "Answer: **Description:** ..."
        text = _LEAD_RE.sub("", text, count=1)
    text = re.sub(r"\s+", " ", text).strip().strip("*_ ").strip()
    if not text:
        return None, "empty: the answer holds no text"
    if text[0] in "{[" and text[-1] in "}]":
        return None, f"not prose: structured data instead of a description ({_excerpt(text)})"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if "\ufffd" in text or letters < MIN_LETTER_SHARE * len(visible):
        return None, f"garbled: {letters} letters in {len(visible)} characters ({_excerpt(text)})"
    words = [w.lower() for w in _WORD_RE.findall(text)]
    if len(words) < MIN_WORDS:
        return None, f"too short: {len(words)} words ({_excerpt(text)})"
    if _REFUSAL_RE.match(text):
        return None, f"refusal: {_excerpt(text)}"
    run, longest, word = 1, 1, words[0]
    for previous, current in zip(words, words[1:]):
        run = run + 1 if current == previous else 1
        if run > longest:
            longest, word = run, current
    if longest >= MAX_RUN:
        return None, f"repetition: {word!r} {longest} times in a row"
    if len(words) >= LOOP_MIN_WORDS and len(set(words)) < MIN_DISTINCT_SHARE * len(words):
        return None, f"repetition: {len(set(words))} distinct words in {len(words)}"
    return text, None


def _excerpt(text: str, size: int = 60) -> str:
    return repr(text if len(text) <= size else text[: size - 3] + "...")
