"""The demo's task: name the colour of the moving square (and optionally its speed).

Built on the same verifiers as the real tasks: the class label is verified categorically against the 12-class
vocabulary, the speed numerically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vstar.sources.shapes import CLASSES, SPEEDS
from vstar.tasks.base import TASKS, Task, read_prompt
from vstar.verify.base import Verdict
from vstar.verify.categorical import CategoricalVerifier
from vstar.verify.numeric import NumericVerifier


@TASKS.register("shapes")
class ShapesTask(Task):
    """Colour of a moving square (the class), and optionally its speed.

    Args:
        fields: the label fields that are verified: `label` (class) and/or `speed` (pixels per frame).
        classes: the class vocabulary (defaults to the 16 shapes classes).
        speed_tolerance: relative tolerance on the speed.
        prompts: prompt overrides.
    """

    name = "shapes"
    label_fields = ("label", "speed")
    class_column = "label"  # a `ClassLabel` there gives the vocabulary
    question_pool = "shapes_questions"

    def __init__(
        self,
        fields: Sequence[str] = ("label",),
        classes: Sequence[str] | None = None,
        speed_tolerance: float = 0.2,
        prompts: Mapping[str, Any] | None = None,
    ):
        super().__init__(prompts)
        unknown = set(fields) - set(self.label_fields)
        if unknown or not fields:
            raise ValueError(f"shapes verifies a non-empty subset of {self.label_fields}; got {list(fields)}.")
        self.fields = tuple(fields)
        self.classes = list(classes or CLASSES)
        self.categorical = CategoricalVerifier(classes=self.classes)
        self.numeric = NumericVerifier(rel_tol=speed_tolerance)

    def label(self, row: Mapping[str, Any]) -> dict[str, Any]:
        label = super().label({"speed": None, **row})
        if isinstance(label["label"], int):
            label["label"] = self.classes[label["label"]]
        return label

    def label_text(self, label: Mapping[str, Any]) -> str:
        text = str(label["label"])
        if "speed" in self.fields:
            text += f", speed {label['speed']:g} pixels per frame"
        return text

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        verdict = Verdict()
        if "label" in self.fields:
            verdict.fields["label"] = self.categorical.verify_field(answer, str(label["label"]), name="label")
        if "speed" in self.fields:
            verdict.fields["speed"] = self.numeric.verify_field(
                answer, float(label["speed"]), name="speed", keywords=("speed",)
            )
        return verdict

    def score(self, answer: str, label: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "label": self.categorical.predict(answer),
            "speed": self.numeric.parse(answer, keywords=("speed",)) if "speed" in self.fields else None,
        }

    def reference_answer(self, label: Mapping[str, Any]) -> str:
        """A correct step-by-step answer written from the label (the seed set's human-written rationale)."""
        color = str(label["label"]).split(" ")[0]
        lines = ["A square moves across the frame.", f"Its colour is {color}."]
        if "speed" in self.fields:
            lines.append(f"It moves {label['speed']:g} pixels per frame.")
        conclusion = self.label_text(label)
        return " ".join(lines) + f"\nAnswer: {conclusion}"


def tokenizer_corpus() -> list[str]:
    """Every text the shapes demo shows or expects, so a tiny tokenizer's merges fit them."""
    task = ShapesTask(fields=("label", "speed"))
    texts = [read_prompt("direct"), read_prompt("rationalization"), task.prompts.answer_format]
    texts += [q for q in task.questions]
    for name in CLASSES:
        for speed in SPEEDS:
            label = {"label": name, "speed": float(speed)}
            texts += [task.reference_answer(label), task.label_text(label), name]
    return texts * 3
