"""Multiple-choice video QA: the question and its options are columns of the dataset; the answer is a letter.

The options come from one column holding a list (or a `{letter: text}` mapping, or JSON text of either), or from
one column per option (`A`, `B`, `C`, `D` by default when there is no options column). The correct answer may be
given as a letter, a 0-based index or the option's text. An answer is right when its conclusion chooses the correct
option, by letter ("Answer: (B)") or by its text; evaluation reports the multiple-choice metrics
(`vstar.evaluate.metrics.multiple_choice_metrics`).

```bash
vstar eval --model MODEL --dataset data/my_video_qa --split test --task multiple_choice \
    --task_options '{"question_column": "q", "options_column": "choices", "answer_column": "correct"}'
```

```python
from vstar.tasks import get_task
task = get_task("multiple_choice")
label = task.label({"question": "What does the man do?", "options": ["walks", "runs"], "answer": "runs"})
task.verify("He speeds up.\\nAnswer: B", label).passed  # True
```
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from vstar.errors import ConfigError, InputError
from vstar.tasks.base import TASKS, Task, check_template, read_prompt
from vstar.verify.base import Verdict
from vstar.verify.choice import ChoiceVerifier, option_keys, options_text, read_choice, reference_key
from vstar.verify.composite import combine

DEFAULT_OPTION_COLUMNS = ("A", "B", "C", "D", "E")


@TASKS.register("multiple_choice")
class MultipleChoiceTask(Task):
    """Which option answers the question about the clip? Label: `{"question", "options", "answer"}` (a letter).

    Args:
        question_column: the column of the question text.
        options_column: the column of the options (a list, a `{letter: text}` mapping, or JSON text of either).
        option_columns: one column per option instead (lettered A, B, ... in this order, or by their own names when
            they are single letters); default: `A`-`E` when the rows have no `options_column`.
        answer_column: the column of the correct option: its letter, 0-based index or text.
        prompts: prompt overrides (see `vstar.tasks.base.Prompts`); question templates use `{question}`.
    """

    name = "multiple_choice"
    question_pool = "multiple_choice_questions"
    question_from_row = True

    def __init__(
        self,
        question_column: str = "question",
        options_column: str = "options",
        option_columns: Sequence[str] | None = None,
        answer_column: str = "answer",
        prompts: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.prompts = replace(self.prompts, answer_format=read_prompt("multiple_choice_answer_format")).updated(
            prompts
        )
        for template in self.prompts.questions:
            check_template(template, "questions", ("question",))
        self.question_column = question_column
        self.options_column = options_column
        self.option_columns = list(option_columns) if option_columns else None
        self.answer_column = answer_column
        # The answer column stratifies limited subsets (an even share of each correct letter).
        self.label_fields = (answer_column, question_column)
        self.verifier = ChoiceVerifier()

    def _options(self, row: Mapping[str, Any]) -> dict[str, str]:
        columns = self.option_columns
        if columns is None and self.options_column in row and row[self.options_column] is not None:
            value = row[self.options_column]
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise InputError(
                        f"Row {row.get('id')!r}: the options column {self.options_column!r} holds text that is not a "
                        "JSON list; store the options as a list, or name one column per option with option_columns."
                    ) from None
            if not isinstance(value, (list, tuple, Mapping)) or not value:
                raise InputError(
                    f"Row {row.get('id')!r}: the options column {self.options_column!r} must hold a non-empty list of "
                    f"option texts, not {value!r}."
                )
            return option_keys(value)
        if columns is None:
            columns = [c for c in DEFAULT_OPTION_COLUMNS if c in row]
            if not columns:
                raise KeyError(
                    f"Task 'multiple_choice' found neither an options column {self.options_column!r} nor option "
                    f"columns A-E in row {row.get('id')!r} (columns: {sorted(row)}); set options_column or "
                    "option_columns in task_options."
                )
        missing = [c for c in columns if c not in row]
        if missing:
            raise KeyError(f"Row {row.get('id')!r} lacks the option columns {missing} (columns: {sorted(row)}).")
        present = [(c, row[c]) for c in columns if row[c] not in (None, "")]
        if all(len(c) == 1 and c.isalpha() for c, _ in present):
            return option_keys({c: str(v) for c, v in present})
        return option_keys([str(v) for _, v in present])

    def label(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The question, the lettered options and the correct letter of a row."""
        for column in (self.question_column, self.answer_column):
            if column not in row:
                raise KeyError(
                    f"Task 'multiple_choice' needs the column {column!r}; row {row.get('id')!r} has {sorted(row)}. "
                    "Name your columns with question_column / answer_column in task_options."
                )
        options = self._options(row)
        try:
            answer = reference_key(row[self.answer_column], options)
        except ValueError as err:
            raise InputError(f"Row {row.get('id')!r}: {err} Fix the answer column or the options.") from None
        return {"question": str(row[self.question_column]), "options": options, "answer": answer}

    def question(self, row: Mapping[str, Any] | None = None, rng: random.Random | None = None) -> str:
        """The row's question in a drawn template, its lettered options, then the answer-format instruction."""
        if row is None:
            raise ValueError("The multiple_choice task asks each row's own question: pass the row.")
        rng = rng or random.Random()
        label = self.label(row)
        question = rng.choice(self.questions).format(question=label["question"])
        return f"{question}\n{options_text(label['options'])}\n{self.prompts.answer_format}".strip()

    def label_text(self, label: Mapping[str, Any]) -> str:
        """The correct option as the hint: `B. The man runs`."""
        return f"{label['answer']}. {label['options'][label['answer']]}"

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        """Whether the answer chooses the correct option (by letter or text), and only it."""
        return combine([self.verifier.verify_field(answer, label["answer"], label["options"], "answer")])

    def score(self, answer: str, label: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The chosen letter (`None` when the answer chooses none or several)."""
        if label is None:
            raise ConfigError("multiple_choice scores an answer against its row's options: pass the label.")
        return {"answer": read_choice(answer, label["options"])[0]}
