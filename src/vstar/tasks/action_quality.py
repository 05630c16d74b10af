"""Diving action quality (FineDiving): sub-actions in order, difficulty and final score.

The label text follows the FineDiving QA form:
`action sequence: Inward, 3.5 Soms.Tuck, Entry. action difficulty: 3.2. final score: 65.6`.

```python
from vstar.tasks import get_task
task = get_task("action_quality")
label = {"action_type": "407c", "difficulty": 3.2, "dive_score": 65.6,
         "sub_actions": ["Inward", "3.5 Soms.Tuck", "Entry"]}
task.verify("Answer: " + task.label_text(label), label).passed  # True
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from vstar.tasks.base import TASKS, Task, read_prompt
from vstar.verify.answer import find_conclusion
from vstar.verify.base import FieldVerdict, Verdict
from vstar.verify.composite import CompositeVerifier
from vstar.verify.numeric import NumericVerifier
from vstar.verify.sequence import SequenceVerifier

SCORE_KEYWORDS = ("final score", "total score", "overall score", "dive score", "score", "points", "scored")
DIFFICULTY_KEYWORDS = ("degree of difficulty", "difficulty degree", "difficulty", "dd")
# Before "score", these words name another quantity ("difficulty score", "judge scores", "execution score").
NOT_THE_SCORE = ("difficulty", "judge", "judges", "execution", "individual", "raw", "award")
# Numbers that count somersaults or twists are never the score or the difficulty.
COUNT_UNITS = ("som", "soms", "somersault", "somersaults", "twist", "twists", "salto", "saltos")
_DIVE_CODE_RE = re.compile(r"\b([1-6]\d{2,3}[a-d])\b", re.IGNORECASE)


def _number_text(value: Any) -> str:
    value = float(value)
    return f"{round(value, 2):g}"


@TASKS.register("action_quality")
class ActionQualityTask(Task):
    """How was the dive performed, and how good was it? Label: `action_type`, `difficulty`, `dive_score`,
    `sub_actions` (FineDiving names in temporal order).

    Args:
        score_rel_tol: relative tolerance of the final score (0.05 = within 5%).
        score_abs_tol: absolute tolerance of the final score (None: relative only).
        difficulty_abs_tol: absolute tolerance of the difficulty.
        entry_optional: whether an answer may leave out the final "Entry" sub-action.
        prompts: prompt overrides (see `vstar.tasks.base.Prompts`).
    """

    name = "action_quality"
    label_fields = ("action_type", "difficulty", "dive_score", "sub_actions")
    primary_metric = "spearman"  # what early stopping and the best cycle follow
    question_pool = "action_quality_questions"

    def __init__(
        self,
        score_rel_tol: float | None = 0.05,
        score_abs_tol: float | None = None,
        difficulty_abs_tol: float | None = 0.05,
        entry_optional: bool = True,
        prompts: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.prompts = replace(self.prompts, answer_format=read_prompt("action_quality_answer_format")).updated(
            prompts
        )
        self.score_verifier = NumericVerifier(
            score_rel_tol, score_abs_tol, exclude_prefixes=NOT_THE_SCORE, ignore_units=COUNT_UNITS
        )
        self.difficulty_verifier = NumericVerifier(None, difficulty_abs_tol, ignore_units=COUNT_UNITS)
        self.sequence_verifier = SequenceVerifier(optional_last=("Entry",) if entry_optional else ())

    def _checks(self, label: Mapping[str, Any]) -> CompositeVerifier:
        code = label.get("action_type")
        return CompositeVerifier(
            {
                "sub_actions": lambda answer, value: self._verify_sub_actions(answer, value, code),
                "difficulty": lambda answer, value: self.difficulty_verifier.verify_field(
                    answer, value, "difficulty", DIFFICULTY_KEYWORDS
                ),
                "dive_score": lambda answer, value: self.score_verifier.verify_field(
                    answer, value, "dive_score", SCORE_KEYWORDS
                ),
            }
        )

    def label_text(self, label: Mapping[str, Any]) -> str:
        """`action sequence: Inward, 3.5 Soms.Tuck, Entry. action difficulty: 3.2. final score: 65.6`."""
        parts = []
        sub_actions: Sequence[str] | None = label.get("sub_actions")
        if sub_actions:
            parts.append("action sequence: " + ", ".join(str(s) for s in sub_actions))
        if label.get("difficulty") is not None:
            parts.append(f"action difficulty: {_number_text(label['difficulty'])}")
        if label.get("dive_score") is not None:
            parts.append(f"final score: {_number_text(label['dive_score'])}")
        return ". ".join(parts)

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        """Sub-actions in order, difficulty and final score, each within tolerance."""
        return self._checks(label).verify(answer, label)

    def _verify_sub_actions(self, answer: str, sub_actions: Sequence[str], code: Any) -> FieldVerdict:
        verdict = self.sequence_verifier.verify_field(answer, sub_actions, "sub_actions")
        if verdict.reason != "no_sequence" or not code:
            return verdict
        # The dive code names the dive ("407c" is an inward 3.5 somersaults tuck): stating the label's code
        # states its sub-actions.
        stated = {m.lower() for m in _DIVE_CODE_RE.findall(find_conclusion(answer).text)}
        if stated == {str(code).lower()}:
            return FieldVerdict(
                "sub_actions", True, verdict.expected, code, "match", "The answer states the dive code."
            )
        if stated:
            found = ", ".join(sorted(stated))
            return FieldVerdict("sub_actions", False, verdict.expected, found, "mismatch", "Another dive code.")
        return verdict

    def score(self, answer: str, label: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The predicted dive code (if stated), difficulty, final score and sub-actions (`None` when unparseable)."""
        code = _DIVE_CODE_RE.search(find_conclusion(answer).text)
        return {
            "action_type": code.group(1).lower() if code else None,
            "difficulty": self.difficulty_verifier.parse(answer, DIFFICULTY_KEYWORDS),
            "dive_score": self.score_verifier.parse(answer, SCORE_KEYWORDS),
            "sub_actions": self.sequence_verifier.parse(answer),
        }
