"""Reading a teacher's raw question-answer output, and the filters every item passes before it is kept.

A raw output should be a JSON list of `{"Dimension", "Question", "Answer"}` objects (plus `"Options"` for
multiple-choice items), as LLaVA-Video-178K's generation asks for; code fences, text around the list, a single
object, a list under one key and differently cased keys are read as well. Anything else is `malformed`.

```python
from vstar.synthesize.qa_parse import load_question_types, parse_output
types = load_question_types()
items, problems = parse_output('[{"Dimension": "count", "Question": "How many cats?", "Answer": "Two."}]',
                               "open", types)
items[0].question_type  # 'count'
```
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vstar.errors import ConfigError

# Why an output or an item is left out (each counted in `qa_report.json`).
TEACHER_FAILURE = "teacher_failure"  # the generation layer reported an error for the request
EMPTY_OUTPUT = "empty_output"  # the teacher answered nothing
EMPTY_DESCRIPTION = "empty_description"  # the caption row has no description to ask about
MALFORMED = "malformed"  # not a JSON list of items, or an item that is not an object with a question and answer
EMPTY_ANSWER = "empty_answer"  # an item whose question or answer is empty
UNKNOWN_TYPE = "unknown_type"  # a `Dimension` that is none of the question types
REPEATED_TYPE = "repeated_type"  # a second item of a type for the same description and format
UNSPECIFIED = "unspecified"  # the answer says the description does not specify / mention / depict / show it
NEAR_DUPLICATE = "near_duplicate"  # a question close to an earlier one about the same video
BAD_OPTIONS = "bad_options"  # a choice item without exactly four non-empty options
DUPLICATE_OPTIONS = "duplicate_options"  # two options of a choice item say the same thing
ANSWER_NOT_AN_OPTION = "answer_not_an_option"  # a choice item whose answer is not exactly one of its options

REASONS = (
    TEACHER_FAILURE,
    EMPTY_OUTPUT,
    EMPTY_DESCRIPTION,
    MALFORMED,
    EMPTY_ANSWER,
    UNKNOWN_TYPE,
    REPEATED_TYPE,
    UNSPECIFIED,
    NEAR_DUPLICATE,
    BAD_OPTIONS,
    DUPLICATE_OPTIONS,
    ANSWER_NOT_AN_OPTION,
)

NUM_OPTIONS = 4
LETTERS = "ABCD"

# An answer that admits the description does not say: one starting "Does not specify", "The description doesn't
# mention ...", "The video does not show ...", or saying "not specified in the description" / "is not specified".
# "The man does not show any emotion" is an answer, not an admission: the subject must be the source or nothing.
_SOURCE = r"(?:the\s+)?(?:description|video|text|caption|narrative|footage|clip|passage)s?"
_NOT = r"(?:does|do|did|is|are|was|were)\s*(?:not|n['’]t)\s+(?:specif|mention|depict|show)"
_UNSPECIFIED_RE = re.compile(
    rf"^\W*(?:{_SOURCE}\s+)?{_NOT}"
    rf"|\b{_SOURCE}\s+{_NOT}"
    rf"|\bnot\s+(?:specified|mentioned|depicted|shown)\s+(?:in|by)\s+{_SOURCE}"
    r"|\b(?:is|are|was|were)\s+(?:not\s+specified|unspecified)\b",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
# "A. text", "(B) text", "C) text", "D: text" at the start of an option.
_OPTION_LABEL_RE = re.compile(r"^\s*\(?([A-Da-d])[).:]\s+")
_KEYS = {
    "type": ("dimension", "type", "question_type", "questiontype", "category"),
    "question": ("question", "q"),
    "answer": ("answer", "a", "correct_answer", "correct"),
    "options": ("options", "choices", "candidates"),
}


@dataclass(frozen=True)
class QuestionType:
    """One of the question types: its name, what it asks, and an example (question, answer, four options)."""

    name: str
    definition: str
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The name in row ids: `fine-grained action` -> `fine_grained_action`."""
        return type_key(self.name).replace(" ", "_")


@dataclass
class Item:
    """A question-answer item read from a raw output (options only for multiple choice)."""

    question_type: str
    question: str
    answer: str
    options: list[str] | None = None


@dataclass
class Problem:
    """Why an item (or a whole output, when `item` is None) is left out."""

    reason: str
    detail: str
    item: Item | None = None
    raw: Any = None


def type_key(name: str) -> str:
    """A type name compared loosely: lower case, words only (`Description-Scene` == `description scene`)."""
    return " ".join(re.findall(r"[a-z0-9]+", str(name).lower()))


def load_question_types(path: str | Path | None = None) -> list[QuestionType]:
    """The question types: the packaged 16 of LLaVA-Video-178K (in our words), or a JSON file of your own.

    Args:
        path: a JSON list of `{"name", "definition", "example": {"question", "answer", "options"}}`.
    """
    if path is None:
        text = (resources.files("vstar.synthesize") / "prompts" / "qa_types.json").read_text(encoding="utf-8")
        where = "the packaged qa_types.json"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--question_types {path} does not exist: give a JSON file of question types.")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not JSON ({err.msg}, line {err.lineno}): fix the file.") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where} must hold a non-empty JSON list of question types.")
    types = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("definition"):
            raise ConfigError(f"{where}, entry {i}: each question type needs a `name` and a `definition`.")
        types.append(QuestionType(str(entry["name"]), str(entry["definition"]), dict(entry.get("example") or {})))
    keys = [type_key(t.name) for t in types]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: two question types have the same name: {sorted(keys)}.")
    return types


def match_type(name: Any, types: Sequence[QuestionType]) -> str | None:
    """The question type a `Dimension` names (case, dashes, underscores and spacing aside), or None."""
    key = type_key(name)
    for question_type in types:
        own = type_key(question_type.name)
        if key == own or key.replace(" ", "") == own.replace(" ", ""):
            return question_type.name
    return None


def says_unspecified(text: str) -> bool:
    """Whether an answer says the description does not specify / mention / depict / show the thing asked."""
    return bool(_UNSPECIFIED_RE.search(text or ""))


def _json_values(text: str) -> list[Any]:
    """Every JSON value that starts at a `[` or `{` in the text and parses, outermost first."""
    decoder = json.JSONDecoder()
    values, position = [], 0
    while True:
        starts = [i for i in (text.find("[", position), text.find("{", position)) if i >= 0]
        if not starts:
            return values
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        values.append(value)
        position = end


def _item_list(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if any(k.lower() in _KEYS["question"] for k in value):
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return None


def _field(raw: dict, name: str) -> Any:
    lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in raw.items()}
    for key in _KEYS[name]:
        if key in lowered:
            return lowered[key]
    return None


def read_items(text: str) -> list[Any]:
    """The raw items of an output (a JSON list found in it), or raise `ValueError` saying why there is none."""
    if not text or not text.strip():
        raise ValueError("the output is empty")
    fenced = _FENCE_RE.findall(text)
    for candidate in [*fenced, text]:
        for value in _json_values(candidate):
            items = _item_list(value)
            if items is not None:
                return items
    raise ValueError(f"no JSON list of question-answer objects in the output (it starts {text.strip()[:80]!r})")


def _strip_labels(options: list[str]) -> list[str]:
    """Options without their `A. ` labels, when every option carries the label of its own position."""
    labels = [_OPTION_LABEL_RE.match(o) for o in options]
    if all(m and m.group(1).upper() == LETTERS[i] for i, m in enumerate(labels)):
        return [o[m.end() :].strip() for o, m in zip(options, labels)]
    return options


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def check_choice(item: Item) -> Problem | None:
    """Why a multiple-choice item cannot be used (its options or its answer), or None."""
    options = item.options
    if (
        not isinstance(options, list)
        or len(options) != NUM_OPTIONS
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        shown = options if isinstance(options, list) else repr(options)
        return Problem(BAD_OPTIONS, f"a choice item needs {NUM_OPTIONS} non-empty options, not {shown}", item)
    normalized = [_normalized(o) for o in options]
    if len(set(normalized)) != NUM_OPTIONS:
        return Problem(DUPLICATE_OPTIONS, f"two options say the same thing: {options}", item)
    if item.answer not in options:
        return Problem(ANSWER_NOT_AN_OPTION, f"the answer {item.answer!r} is not exactly one of {options}", item)
    return None


def parse_output(text: str, format: str, types: Sequence[QuestionType]) -> tuple[list[Item], list[Problem]]:
    """The usable items of one raw output and the problems of the others (type, emptiness, unspecified, options).

    Near-duplicate questions are judged afterwards across a video's items (`near_duplicates`).

    Args:
        text: the teacher's raw output.
        format: `open` or `multiple_choice`.
        types: the question types.
    """
    try:
        raw_items = read_items(text)
    except ValueError as err:
        return [], [Problem(EMPTY_OUTPUT if not (text or "").strip() else MALFORMED, str(err), raw=text)]
    items: list[Item] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for raw in raw_items:
        if not isinstance(raw, dict):
            problems.append(Problem(MALFORMED, f"an item is not a JSON object: {raw!r}"[:300], raw=raw))
            continue
        question, answer = _field(raw, "question"), _field(raw, "answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            problems.append(Problem(MALFORMED, f"an item lacks a text Question or Answer: {raw!r}"[:300], raw=raw))
            continue
        options = _field(raw, "options")
        if format == "multiple_choice" and isinstance(options, list):
            options = [o.strip() if isinstance(o, str) else o for o in options]
            stripped = _strip_labels(options) if all(isinstance(o, str) for o in options) else options
            if stripped is not options:
                answer_label = _OPTION_LABEL_RE.match(answer)
                if answer_label:
                    answer = answer[answer_label.end() :]
            options = stripped
        name = match_type(_field(raw, "type"), types)
        item = Item(name or str(_field(raw, "type")), question.strip(), answer.strip(), options)
        if name is None:
            problems.append(Problem(UNKNOWN_TYPE, f"{_field(raw, 'type')!r} is none of the question types", item))
            continue
        if not item.question or not item.answer:
            problems.append(Problem(EMPTY_ANSWER, "the question or the answer is empty", item))
            continue
        if name in seen:
            problems.append(Problem(REPEATED_TYPE, f"a second {name!r} item (one per type is kept)", item))
            continue
        if says_unspecified(item.answer):
            problems.append(Problem(UNSPECIFIED, f"the answer says it is not specified: {item.answer!r}", item))
            continue
        if format == "multiple_choice":
            problem = check_choice(item)
            if problem is not None:
                problems.append(problem)
                continue
        seen.add(name)
        items.append(item)
    return items, problems


def near_duplicates(questions: Sequence[str], threshold: float) -> dict[int, int]:
    """`{index: index of the earlier question it nearly repeats}` for questions of one video.

    Args:
        questions: the questions in the order they are kept.
        threshold: `rapidfuzz.fuzz.token_sort_ratio` (0-100) at or above which two questions count as one.
    """
    from rapidfuzz import fuzz

    kept: list[tuple[int, str]] = []
    repeats: dict[int, int] = {}
    for i, question in enumerate(questions):
        text = _normalized(question)
        earlier = next((j for j, other in kept if fuzz.token_sort_ratio(text, other) >= threshold), None)
        if earlier is None:
            kept.append((i, text))
        else:
            repeats[i] = earlier
    return repeats
