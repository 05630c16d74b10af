"""Combining field verifiers into one verdict.

A task's label has several fields (a dive's sub-actions, difficulty and score); each has its own verifier,
and the answer passes when every verified field passes. A verifier that raises is reported as a failed field
(`error`) rather than stopping a generation run.

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
        return combine(out)
