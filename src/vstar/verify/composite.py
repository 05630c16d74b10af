"""Combining field verifiers into one verdict.

A task's label has several fields (a dive's sub-actions, difficulty and score); each has its own verifier,
and the answer passes when every verified field passes. A verifier that raises is reported as a failed field
(`error`) rather than stopping a generation run. An answer that offers a second answer beside its conclusion
("Alternatively: ...", "a second estimate would be ...") fails as `hedged`, whatever its fields say.

```python
from vstar.verify import CompositeVerifier, NumericVerifier
num = NumericVerifier(rel_tol=0.05)
v = CompositeVerifier({"dive_score": lambda answer, value: num.verify_field(answer, value, "dive_score", ["score"])})
v.verify("Answer: final score 65.6", {"dive_score": 65.6}).passed  # True
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vstar.verify.answer import find_conclusion, find_numbers, normalize_text, offers_second_answer
from vstar.verify.base import FieldVerdict, Verdict

logger = logging.getLogger(__name__)

FieldCheck = Callable[[str, Any], FieldVerdict]


def combine(verdicts: Iterable[FieldVerdict]) -> Verdict:
    """One verdict from per-field verdicts (it passes when all of them pass).

    Args:
        verdicts: field verdicts; their `name`s key the result.
    """
    return Verdict(fields={v.name: v for v in verdicts})


class CompositeVerifier:
    """Runs one check per label field and combines the results.

    Args:
        checks: per label field, a function `(answer, label_value) -> FieldVerdict`. Fields missing from a label
            (or None there) are not verified.
    """

    def __init__(self, checks: Mapping[str, FieldCheck]):
        self.checks = dict(checks)

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        """Verify every field of `label` that has a check.

        Args:
            answer: the model's answer.
            label: the label fields.
        """
        out: list[FieldVerdict] = []
        for name, check in self.checks.items():
            if name not in label or label[name] is None:
                continue
            try:
                verdict = check(answer, label[name])
            except Exception as exc:  # a verifier bug must not lose a generated answer
                logger.exception("Verifier for field %r failed", name)
                verdict = FieldVerdict(name, False, str(label[name]), None, "error", f"{type(exc).__name__}: {exc}")
            out.append(verdict)
        second = second_answer(answer) if any(v.passed for v in out) else None
        if second is not None and not any(v.reason == "hedged" for v in out):
            # "Answer: ... final score: 70.5\nAlternatively: ... 61.5": the answer offers two answers, so none of its
            # fields is committed to. A field verifier that already found the hedge has named the field.
            out = [
                v
                if not v.passed
                else FieldVerdict(
                    v.name, False, v.expected, v.found, "hedged", f"The answer offers a second answer: {second!r}."
                )
                for v in out
            ]
        return combine(out)


def second_answer(answer: object) -> str | None:
    """The second answer an answer offers after (or inside) its conclusion, or None.

    A sentence that says "alternatively", "a second estimate", "another possibility", "if not, ..." (or "it could
    also be") and then states a value counts: "Answer: final score 70.5. A second estimate would be 61.5."

    Args:
        answer: the model's answer.
    """
    conclusion = find_conclusion(answer)
    for text in (conclusion.text, conclusion.after):
        norm = normalize_text(text)
        match = offers_second_answer(norm)
        if match is not None and any(n.kind != "denominator" for n in find_numbers(norm[match.end() :])):
            return text.strip()[:200]
    return None
