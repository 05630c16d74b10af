"""Verdicts: what a verifier decided about one answer, field by field, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FieldVerdict:
    """The decision for one label field.

    Args:
        name: the label field (e.g. `label`, `dive_score`).
        passed: whether the answer's conclusion matches the expected value.
        expected: the label value, as text.
        found: what the answer concluded for this field (`None` if it concluded nothing).
        reason: a short machine-friendly reason (`match`, `mismatch`, `no_conclusion`, `negated`, `hedged`,
            `near_miss`, `conflict`, `out_of_tolerance`, ...).
        detail: a human-readable explanation.
    """

    name: str
    passed: bool
    expected: str
    found: str | None
    reason: str
    detail: str = ""


@dataclass
class Verdict:
    """The decision for one answer: it passes when every verified field passes."""

    fields: dict[str, FieldVerdict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.fields) and all(f.passed for f in self.fields.values())

    @property
    def reason(self) -> str:
        """The first failing field's reason (`field:reason`), or `match`."""
        for f in self.fields.values():
            if not f.passed:
                return f"{f.name}:{f.reason}"
        return "match" if self.fields else "no_fields"

    def to_dict(self) -> dict[str, Any]:
        """A JSON/Arrow-friendly form (a list keeps the Arrow schema fixed across tasks)."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "fields": [{k: ("" if v is None else v) for k, v in asdict(f).items()} for f in self.fields.values()],
        }
