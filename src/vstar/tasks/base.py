"""The task interface: one task per kind of label.

A task knows how to ask about a label (a pool of paraphrased questions and the answer-format instruction),
how to render the label as a hint for rationalization, how to verify an answer's conclusion against the
label, and how to score a prediction for evaluation. Prompts are text files in `vstar/tasks/prompts/` and can
be overridden from a recipe (`task_options: {prompts: {...}}`).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vstar.errors import ConfigError, UnknownNameError
from vstar.registry import Registry
from vstar.verify.base import Verdict

if TYPE_CHECKING:
    from datasets import Features

TASKS: Registry[type[Task]] = Registry("task")

_PROMPTS = resources.files("vstar.tasks") / "prompts"


def read_prompt(name: str) -> str:
    """Read a packaged prompt file (`prompts/<name>.txt`), without the trailing newline."""
    return (_PROMPTS / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")


def question_lines(text: str) -> list[str]:
    """The questions of a pool's text: one per non-empty line; a line starting with `#` is a comment."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_question_pool(name: str) -> list[str]:
    """Read a packaged question pool: one question per non-empty line, `#` starts a comment line."""
    return question_lines(read_prompt(name))


# The fields each prompt template must use, and the only ones it may use.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {"direct": ("question",), "rationalization": ("question", "hint")}


def template_fields(text: str, where: str) -> set[str]:
    """The `{field}` names of a template (`str.format` syntax; `{{` and `}}` are literal braces).

    Args:
        text: the template.
        where: what the template is, for the error message.
    """
    try:
        return {
            name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name is not None
        }
    except ValueError as err:
        raise ConfigError(f"{where} is not a valid template ({err}); write literal braces as {{{{ and }}}}.") from None


def check_template(text: str, key: str, required: Sequence[str], where: str | None = None) -> None:
    """Raise a `ConfigError` unless a template uses exactly the fields it is given.

    Args:
        text: the template.
        key: the prompt's name (`direct`, `rationalization`, ...).
        required: the fields it must use (and the only ones it may).
        where: where it came from (a file), for the error message.
    """
    what = f"The {key!r} prompt" + (f" ({where})" if where else "")
    found = template_fields(text, what)
    missing = [f for f in required if f not in found]
    unknown = sorted(found - set(required))
    problems = []
    if missing:
        problems.append("lacks " + ", ".join("{" + f + "}" for f in missing))
    if unknown:
        problems.append("uses unknown " + ", ".join("{" + f + "}" for f in unknown))
    if problems:
        allowed = ", ".join("{" + f + "}" for f in required)
        raise ConfigError(
            f"{what} {' and '.join(problems)}: it must contain {allowed} (literal braces are written {{{{ and }}}})."
        )


def _prompt_value(key: str, value: Any) -> tuple[Any, str | None]:
    """A recipe's prompt value as text (or a question list), reading a `.txt` path; also where it came from."""
    if isinstance(value, Path) or (isinstance(value, str) and value.strip().endswith(".txt") and "\n" not in value):
        path = Path(str(value).strip()).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"The {key!r} prompt names the file {str(value).strip()}, which does not exist "
                f"(relative paths start from {Path.cwd()}); fix the path or give the text itself."
            )
        return path.read_text(encoding="utf-8").rstrip("\n"), str(path)
    return value, None


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
        """A copy with recipe overrides applied; a value may be the text itself or a path to a `.txt` file.

        A question pool is a list, or a text (or `.txt` file) with one question per line, `#` lines being comments.
        Templates are checked for their fields (`direct`: `{question}`; `rationalization`: `{question}` and
        `{hint}`), so a typo fails when the task is made, not halfway through a run.

        Args:
            overrides: `{prompt: text, list or path}`; keys are `questions`, `answer_format`, `direct`,
                `rationalization`.
        """
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"`prompts` must be a mapping of prompt names to texts or files, not {overrides!r}.")
        values = {**self.__dict__}
        for key, value in overrides.items():
            if key not in values:
                raise UnknownNameError(f"Unknown prompt {key!r}; known prompts: {', '.join(values)}.")
            value, where = _prompt_value(key, value)
            if key == "questions":
                questions = question_lines(value) if isinstance(value, str) else [str(q).strip() for q in value]
                if not questions or not all(questions):
                    raise ConfigError(
                        f"The question pool{f' {where}' if where else ''} has no questions (or an empty one): give "
                        "one question per line."
                    )
                values[key] = questions
            else:
                if not isinstance(value, str):
                    raise ConfigError(f"The {key!r} prompt must be a text or a .txt file, not {value!r}.")
                if key in TEMPLATE_FIELDS:
                    check_template(value, key, TEMPLATE_FIELDS[key], where)
                values[key] = value
        return Prompts(**values)


class Task:
    """Base class of tasks. Subclasses set `name`, `label_fields` and implement the label-specific parts.

    Args:
        prompts: overrides for the task's prompts (see `Prompts`).
    """

    name: str = ""
    label_fields: tuple[str, ...] = ()
    question_pool: str = ""
    # Whether `question` needs the row (the question and options are columns of the dataset).
    question_from_row: bool = False
    # The label column whose `ClassLabel` names become the `classes` option when a recipe gives none.
    class_column: str | None = None

    @classmethod
    def options_from_features(cls, options: Mapping[str, Any], features: Features) -> dict[str, Any]:
        """Task options completed from the source's features: the vocabulary of a `ClassLabel` class column.

        Args:
            options: the options the recipe gives (they win).
            features: the source split's `datasets.Features`.
        """
        from datasets import ClassLabel

        options = dict(options)
        column = cls.class_column
        feature = features.get(column) if column else None
        if isinstance(feature, ClassLabel) and options.get("classes") is None and "classes" in _init_names(cls):
            options["classes"] = list(feature.names)
        return options

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


def _init_names(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _takes_any_option(cls: type) -> bool:
    import inspect

    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def get_task(name: str, **options: Any) -> Task:
    """Instantiate a registered task by name, e.g. `get_task("action_recognition", classes=[...])`."""
    import vstar.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)(**options)


def parse_task_options(options: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Task options from a recipe or a flag: a mapping, a JSON object as text, or None (no options).

    Args:
        options: the `task_options` setting.
    """
    if options is None:
        return {}
    if isinstance(options, str):
        if not options.strip():
            return {}
        try:
            options = json.loads(options)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"task_options is not valid JSON ({err.msg} at character {err.pos}): give a JSON object such as "
                "'{\"threshold\": 80}' or a mapping in the recipe."
            ) from None
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"task_options must be a mapping (a JSON object), not {type(options).__name__}: {options!r}."
        )
    return dict(options)


def load_task(name: str, options: Mapping[str, Any] | str | None = None, features: Features | None = None) -> Task:
    """The task a run uses: its options parsed, completed from the source dataset's features, and checked.

    The one place task options are read (the loop, the stage commands and `vstar eval` all call it). When the
    source's class column is a `ClassLabel` and the options give no `classes`, the task gets the class names, so
    a verifier knows the vocabulary without any setting: near misses ("playing bass guitar" for `playing guitar`)
    are rejected and predictions are classes of the vocabulary.

    Args:
        name: the registered task name.
        options: the recipe's `task_options` (mapping, JSON text or None).
        features: the source split's `datasets.Features`, if known.

    ```python
    from datasets import ClassLabel, Features
    from vstar.tasks.base import load_task
    task = load_task("action_recognition", None, Features({"label": ClassLabel(names=["abseiling", "yoga"])}))
    task.classes  # ['abseiling', 'yoga']
    ```
    """
    import vstar.tasks  # noqa: F401  (registers the built-in tasks)

    cls = TASKS.get(name)
    values = parse_task_options(options)
    unknown = [] if _takes_any_option(cls) else sorted(set(values) - _init_names(cls))
    if unknown:
        known = ", ".join(sorted(_init_names(cls))) or "none"
        raise ConfigError(f"Task {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {known}.")
    if features is not None:
        values = cls.options_from_features(values, features)
    return cls(**values)


def draw_questions(
    task: Task, ids: Sequence[str], seed: int, rows: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """One question per clip, deterministic in (seed, id) so a resumed or sharded run asks the same thing.

    Args:
        task: the task.
        ids: the clip ids.
        seed: the draw's seed.
        rows: the clips' source rows, in the order of `ids`: tasks whose question comes from the row (multiple
            choice) need them.
    """
    if rows is None:
        if task.question_from_row:
            raise ValueError(f"Task {task.name!r} asks each row's own question: pass the rows to draw_questions.")
        return [task.question(rng=random.Random(f"{seed}:{clip_id}")) for clip_id in ids]
    return [task.question(row, rng=random.Random(f"{seed}:{clip_id}")) for clip_id, row in zip(ids, rows)]
