"""The task interface: one task per kind of label.

A task knows how to ask about a label (a pool of paraphrased questions and the answer-format instruction),
how to render the label as a hint for rationalization, how to verify an answer's conclusion against the
label, and how to score a prediction for evaluation. Prompts are text files in `vstar/tasks/prompts/` and can
be overridden from a recipe (`task_options: {prompts: {...}}`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vstar.registry import Registry
from vstar.verify.base import Verdict

TASKS: Registry[type[Task]] = Registry("task")

_PROMPTS = resources.files("vstar.tasks") / "prompts"


def read_prompt(name: str) -> str:
    """Read a packaged prompt file (`prompts/<name>.txt`), without the trailing newline."""
    return (_PROMPTS / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")


def read_question_pool(name: str) -> list[str]:
    """Read a packaged question pool: one question per non-empty line, `#` starts a comment line."""
    lines = read_prompt(name).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Prompts:
    """The text a task shows the model.

    Args:
        questions: paraphrases of the task's question; one is drawn per clip.
        answer_format: appended to the question; asks for reasoning followed by a final answer line.
        direct: the direct prompt template, with `{question}`.
        rationalization: the hinted prompt template, with `{question}` and `{hint}`.
    """

    questions: list[str]
    answer_format: str = field(default_factory=lambda: read_prompt("answer_format"))
    direct: str = field(default_factory=lambda: read_prompt("direct"))
    rationalization: str = field(default_factory=lambda: read_prompt("rationalization"))

    def updated(self, overrides: Mapping[str, Any] | None) -> Prompts:
        """A copy with recipe overrides applied; a value may be the text itself or a path to a `.txt` file."""
        if not overrides:
            return self
        values = {**self.__dict__}
        for key, value in overrides.items():
            if key not in values:
                raise KeyError(f"Unknown prompt {key!r}; known prompts: {', '.join(values)}.")
            if isinstance(value, str) and value.endswith(".txt") and Path(value).is_file():
                text = Path(value).read_text(encoding="utf-8").rstrip("\n")
                value = [q for q in text.splitlines() if q.strip()] if key == "questions" else text
            values[key] = list(value) if key == "questions" else str(value)
        if not values["questions"]:
            raise ValueError("The question pool is empty.")
        return Prompts(**values)


class Task:
    """Base class of tasks. Subclasses set `name`, `label_fields` and implement the label-specific parts.

    Args:
        prompts: overrides for the task's prompts (see `Prompts`).
    """

    name: str = ""
    label_fields: tuple[str, ...] = ()
    question_pool: str = ""

    def __init__(self, prompts: Mapping[str, Any] | None = None):
        self.prompts = Prompts(questions=read_question_pool(self.question_pool)).updated(prompts)

    @property
    def questions(self) -> list[str]:
        return self.prompts.questions

    def question(self, row: Mapping[str, Any] | None = None, rng: random.Random | None = None) -> str:
        """Draw a question for a clip, with the answer-format instruction appended."""
        rng = rng or random.Random()
        question = rng.choice(self.questions)
        return f"{question} {self.prompts.answer_format}".strip()

    def label(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The label fields of a source-dataset row."""
        missing = [f for f in self.label_fields if f not in row]
        if missing:
            raise KeyError(
                f"Task {self.name!r} needs the label columns {list(self.label_fields)}; the row lacks {missing}. "
                "Map your columns to these names when building the source dataset."
            )
        return {f: row[f] for f in self.label_fields}

    def direct_prompt(self, question: str) -> str:
        return self.prompts.direct.format(question=question)

    def rationalization_prompt(self, question: str, label: Mapping[str, Any]) -> str:
        return self.prompts.rationalization.format(question=question, hint=self.label_text(label))

    def label_text(self, label: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        raise NotImplementedError

    def score(self, answer: str, label: Mapping[str, Any]) -> dict[str, Any]:
        """What evaluation needs from an answer: the predicted value of each field (`None` if unparseable)."""
        raise NotImplementedError


def get_task(name: str, **options: Any) -> Task:
    """Instantiate a registered task by name, e.g. `get_task("action_recognition", classes=[...])`."""
    import vstar.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)(**options)


def draw_questions(task: Task, ids: Sequence[str], seed: int) -> list[str]:
    """One question per clip, deterministic in (seed, id) so a resumed or sharded run asks the same thing."""
    return [task.question(rng=random.Random(f"{seed}:{clip_id}")) for clip_id in ids]
