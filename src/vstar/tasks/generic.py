"""A task declared in the recipe: any mix of categorical, numeric and ordered-sequence label columns, no code.

```yaml
task: generic
task_options:
  fields:
    - {column: label, kind: categorical}                 # classes from the source's ClassLabel, or `classes: [...]`
    - {column: score, kind: numeric, tolerance: 0.1}     # relative tolerance (0.1 = within 10%); or abs_tolerance
    - {column: steps, kind: sequence}                    # the label's items, in order
```

The label text (the rationalization hint, and the answer format the question asks for) is `label: X. score: 0.8.
steps: a, b, c` (the value alone for a single field). Each field is verified on its own part of the conclusion
("score: ..."), the answer passes when every field does, and evaluation reports per-field metrics.

```python
from vstar.tasks import get_task
task = get_task("generic", fields=[{"column": "label", "kind": "categorical", "classes": ["cat", "dog"]},
                                   {"column": "score", "kind": "numeric", "tolerance": 0.1}])
task.verify("Answer: label: cat. score: 0.82", {"label": "cat", "score": 0.8}).passed  # True
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vstar.errors import ConfigError
from vstar.tasks.base import TASKS, Task, read_prompt
from vstar.verify.answer import find_conclusion
from vstar.verify.base import FieldVerdict, Verdict
from vstar.verify.categorical import CategoricalVerifier
from vstar.verify.composite import CompositeVerifier
from vstar.verify.numeric import NumericVerifier
from vstar.verify.sequence import StepSequenceVerifier

if TYPE_CHECKING:
    from datasets import Features

KINDS = ("categorical", "numeric", "sequence")


@dataclass
class FieldSpec:
    """One label column of the generic task.

    Args:
        column: the source dataset's column.
        kind: `categorical`, `numeric` or `sequence`.
        name: how the answer names the field (default: the column with spaces for underscores).
        classes: the vocabulary of a categorical field (default: the column's `ClassLabel` names, if any).
        aliases: other names per class of a categorical field.
        threshold: fuzzy score (0-100) for misspelt words (categorical, sequence).
        tolerance: relative tolerance of a numeric field (0.1 = within 10%).
        abs_tolerance: absolute tolerance of a numeric field.
        keywords: more phrases a numeric value may be attached to ("final score").
    """

    column: str
    kind: str
    name: str = ""
    classes: list[str] | None = None
    aliases: dict[str, list[str]] = field(default_factory=dict)
    threshold: float = 85.0
    tolerance: float | None = None
    abs_tolerance: float | None = None
    keywords: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"Field {self.column!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")
        self.name = self.name or self.column.replace("_", " ")
        if self.kind == "numeric" and self.tolerance is None and self.abs_tolerance is None:
            self.tolerance = 0.05


def _fields(fields: Any) -> list[FieldSpec]:
    if not fields or not isinstance(fields, Sequence) or isinstance(fields, str):
        raise ConfigError(
            'The generic task needs `fields`: a list such as [{"column": "label", "kind": "categorical"}, '
            '{"column": "score", "kind": "numeric", "tolerance": 0.1}].'
        )
    specs = []
    for i, spec in enumerate(fields):
        if isinstance(spec, FieldSpec):
            specs.append(spec)
            continue
        if not isinstance(spec, Mapping) or "column" not in spec or "kind" not in spec:
            raise ConfigError(f"fields[{i}] must be a mapping with `column` and `kind`, not {spec!r}.")
        known = set(FieldSpec.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"fields[{i}] ({spec['column']!r}) has unknown keys {unknown}; known: {sorted(known)}.")
        specs.append(FieldSpec(**spec))
    columns = [s.column for s in specs]
    if len(set(columns)) != len(columns):
        raise ConfigError(f"The generic task's fields name a column twice: {columns}.")
    return specs


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{round(float(value), 4):g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


@TASKS.register("generic")
class GenericTask(Task):
    """Label columns declared in the recipe (`fields`), verified by kind.

    Args:
        fields: the label columns: mappings with `column`, `kind` and the options of `FieldSpec`.
        prompts: prompt overrides (see `vstar.tasks.base.Prompts`); the packaged questions use `{fields}`.
    """

    name = "generic"
    question_pool = "generic_questions"

    @classmethod
    def options_from_features(cls, options: Mapping[str, Any], features: Features) -> dict[str, Any]:
        """Each categorical field without `classes` takes its column's `ClassLabel` names."""
        from datasets import ClassLabel

        options = dict(options)
        fields = []
        for spec in options.get("fields") or ():
            if isinstance(spec, Mapping) and spec.get("kind") == "categorical" and spec.get("classes") is None:
                feature = features.get(spec.get("column"))
                if isinstance(feature, ClassLabel):
                    spec = {**spec, "classes": list(feature.names)}
            fields.append(spec)
        if fields:
            options["fields"] = fields
        return options

    def __init__(self, fields: Sequence[Mapping[str, Any]] | None = None, prompts: Mapping[str, Any] | None = None):
        self.fields = _fields(fields)
        super().__init__()
        names = [f.name for f in self.fields]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        shape = {"categorical": "<{}>", "numeric": "<number>", "sequence": "<{} in order>"}
        if len(self.fields) == 1:
            fmt = shape[self.fields[0].kind].format(self.fields[0].name)
        else:
            fmt = ". ".join(f"{f.name}: " + shape[f.kind].format(f.name) for f in self.fields)
        defaults = replace(
            self.prompts,
            questions=[q.replace("{fields}", listed) for q in self.prompts.questions],
            answer_format=read_prompt("generic_answer_format").replace("{fields}", fmt),
        )
        self.prompts = defaults.updated(prompts)
        # A recipe's own questions may name the fields too.
        self.prompts.questions = [q.replace("{fields}", listed) for q in self.prompts.questions]
        self.label_fields = tuple(f.column for f in self.fields)
        self._verifiers: dict[str, Any] = {}
        for f in self.fields:
            if f.kind == "categorical":
                self._verifiers[f.column] = CategoricalVerifier(f.classes, threshold=f.threshold, aliases=f.aliases)
            elif f.kind == "numeric":
                self._verifiers[f.column] = NumericVerifier(f.tolerance, f.abs_tolerance)
            else:
                self._verifiers[f.column] = StepSequenceVerifier(keys=[f.name, f.column], threshold=f.threshold)
        self._composite = CompositeVerifier({f.column: self._check(f) for f in self.fields})
        keys = sorted({k for f in self.fields for k in (f.name, f.column)}, key=len, reverse=True)
        self._key_re = re.compile(
            r"(?i)\b(" + "|".join(re.escape(k).replace(r"\ ", r"[\s_]+") for k in keys) + r")\s*[:=]"
        )

    @property
    def classes(self) -> list[str] | None:
        """The vocabulary of the first categorical field (what `vstar eval` reports classes over)."""
        return next((f.classes for f in self.fields if f.kind == "categorical"), None)

    def _part(self, answer: str, spec: FieldSpec) -> str:
        """The field's part of a labelled conclusion ("label: cat. score: 0.8" -> "cat"), else the whole answer."""
        conclusion = find_conclusion(answer)
        if len(self.fields) == 1 or not conclusion.text:
            return answer
        marks = list(self._key_re.finditer(conclusion.text))
        for k, m in enumerate(marks):
            if m.group(1).lower().replace("_", " ") in (spec.name.lower(), spec.column.lower().replace("_", " ")):
                end = marks[k + 1].start() if k + 1 < len(marks) else len(conclusion.text)
                part = conclusion.text[m.end() : end].strip().rstrip(".;, ")
                return f"Answer: {part}" + (f"\n{conclusion.after}" if conclusion.after else "")
        return answer

    def _check(self, spec: FieldSpec):
        verifier = self._verifiers[spec.column]

        def check(answer: str, value: Any) -> FieldVerdict:
            part = self._part(answer, spec)
            if spec.kind == "categorical":
                return verifier.verify_field(part, str(value), spec.column)
            if spec.kind == "numeric":
                return verifier.verify_field(part, value, spec.column, [spec.name, *spec.keywords])
            return verifier.verify_field(part, list(value) if not isinstance(value, str) else value, spec.column)

        return check

    def label_text(self, label: Mapping[str, Any]) -> str:
        """`label: cat. score: 0.8. steps: a, b` (the value alone for a single field)."""
        if len(self.fields) == 1:
            return _value_text(label[self.fields[0].column])
        return ". ".join(
            f"{f.name}: {_value_text(label[f.column])}" for f in self.fields if label.get(f.column) is not None
        )

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        """Every declared field of the label, each on its part of the conclusion."""
        return self._composite.verify(answer, label)

    def score(self, answer: str, label: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Per field the predicted value: a class (or the conclusion's text), a number, a list of steps (`None` when
        unparseable)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            part = self._part(answer, f)
            verifier = self._verifiers[f.column]
            if f.kind == "categorical":
                out[f.column] = verifier.predict(part)
            elif f.kind == "numeric":
                out[f.column] = verifier.parse(part, [f.name, *f.keywords])
            else:
                expected = (label or {}).get(f.column)
                out[f.column] = verifier.parse(part, list(expected) if isinstance(expected, (list, tuple)) else None)
        return out
