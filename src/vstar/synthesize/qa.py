"""`vstar qa`: question-answer pairs of 16 types from video descriptions (LLaVA-Video-178K), open and multiple choice.

A text model reads each description of a caption dataset (`vstar caption`) and writes at most one question per type
of the 16 (`prompts/qa_types.json`: temporal, spatial, causal, ...) as JSON, once for open-ended answers and once
for four-option multiple choice. Every item is filtered: malformed output, an unknown or repeated type, an empty
answer, an answer saying the description does not specify / mention / depict / show it, a question nearly repeating
an earlier one about the same video, and choice items whose options repeat or whose answer is not exactly one of
them. The options are shuffled here, not by the teacher: the correct letters of the kept items are spread evenly
over A-D, deterministically from `shuffle_seed`.

The output is an instruction dataset (`vstar.synthesize.qa_schema.QA_FEATURES`, Hub layout): `vstar train` trains
on it, its multiple-choice rows are rows of the `multiple_choice` task, and `vstar export --format llava` writes
LLaVA-Video JSON from it. Left-out items are in the `rejected` config with the reason; the counts are in
`OUTPUT/qa_report.json`. Generation is resumable and sharded like `vstar generate` (`OUTPUT/generations/`).

```bash
vstar qa --captions data/captions --model Qwen/Qwen2.5-7B-Instruct --output data/qa --max_new_tokens 2048
vstar qa --config recipes/synthesis/qa.yaml --backend vllm
```
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.errors import ConfigError, InputError
from vstar.generate.base import GenerationBackend, GenerationRequest, GenerationSettings
from vstar.synthesize.qa_parse import (
    EMPTY_DESCRIPTION,
    LETTERS,
    NEAR_DUPLICATE,
    REASONS,
    TEACHER_FAILURE,
    Item,
    Problem,
    QuestionType,
    load_question_types,
    near_duplicates,
    parse_output,
)
from vstar.synthesize.qa_schema import (
    FORMATS,
    QA_FEATURES,
    accepted_verdict,
    rejected_verdict,
    split_path,
    write_dataset_card,
)

logger = logging.getLogger(__name__)

PASS_NAME = "qa"
REQUIRED_COLUMNS = ("id", "video")
CHOICE_ANSWERS = ("letter", "full")


@dataclass
class QAConfig:
    """`vstar qa`: question-answer items of 16 types from the descriptions of a caption dataset."""

    captions: str = field(
        default="", metadata={"help": "Caption dataset (`vstar caption` output: directory or Hub id)."}
    )
    captions_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub caption dataset."})
    split: str = field(default="train", metadata={"help": "Split of the caption dataset."})
    model: str = field(default="", metadata={"help": "Text model that writes the items (directory or Hub id)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter of the model."})
    output: str = field(default="data/qa", metadata={"help": "Instruction dataset directory (Hub layout)."})
    formats: list[str] = field(
        default_factory=lambda: list(FORMATS),
        metadata={"help": "Which items to write: `open`, `multiple_choice` or both (one teacher request each)."},
    )
    description_column: str = field(
        default="description", metadata={"help": "The column holding each video's whole description."}
    )
    choice_answer: str = field(
        default="letter",
        metadata={
            "help": "Answer of a choice item: `letter` (`B.`, asked with 'respond with only the letter') or `full` "
            "(`B. <option>`)."
        },
    )
    duplicate_threshold: float = field(
        default=90.0,
        metadata={
            "help": "Two questions about one video whose rapidfuzz token-sort ratio (0-100) reaches this are "
            "near-duplicates: the later one is rejected."
        },
    )
    shuffle_seed: int = field(
        default=0, metadata={"help": "Seed of the option order (the correct letters are spread evenly)."}
    )
    limit: int | None = field(default=None, metadata={"help": "Use at most the first N caption rows."})
    question_types: str | None = field(
        default=None, metadata={"help": "JSON file of question types (default: the 16 of LLaVA-Video-178K)."}
    )
    open_prompt: str | None = field(
        default=None, metadata={"help": "Prompt file (or text) for open items, with {types} and {description}."}
    )
    choice_prompt: str | None = field(
        default=None,
        metadata={"help": "Prompt file (or text) for multiple-choice items, with {types} and {description}."},
    )


def read_prompt(name: str) -> str:
    """A packaged prompt of the synthesis stage (`prompts/<name>.txt`), without the trailing newline."""
    from importlib import resources

    return (resources.files("vstar.synthesize") / "prompts" / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")


def _prompt_text(value: str | None, default: str, setting: str) -> str:
    from vstar.tasks.base import check_template

    if value is None:
        text = read_prompt(default)
    elif value.strip().endswith(".txt") and "\n" not in value:
        path = Path(value.strip()).expanduser()
        if not path.is_file():
            raise ConfigError(f"--{setting} {path} does not exist: give a prompt file or the prompt text itself.")
        text = path.read_text(encoding="utf-8").rstrip("\n")
    else:
        text = value
    check_template(text, setting, ("types", "description"))
    return text


def types_text(types: Sequence[QuestionType], format: str) -> str:
    """The question types as the prompt lists them: name, definition and the in-context example.

    For multiple choice, one complete item (the first type's example with its options) follows the list: options
    for every example would double the prompt (about 1,200 more tokens per description) for no new information.
    """
    lines = []
    for t in types:
        example = t.example
        line = f"- {t.name}: {t.definition}"
        if example.get("question") and example.get("answer"):
            line += f" Example: Q: {example['question']} A: {example['answer']}"
        lines.append(line)
    if format == "multiple_choice":
        full = next((t for t in types if t.example.get("options")), None)
        if full is not None:
            item = {
                "Dimension": full.name,
                "Question": full.example["question"],
                "Options": full.example["options"],
                "Answer": full.example["answer"],
            }
            lines.append(f"\nOne complete item, for the {full.name} type: {json.dumps(item, ensure_ascii=False)}")
    return "\n".join(lines)


class _Prompts:
    def __init__(self, config: QAConfig, types: Sequence[QuestionType]):
        self.templates = {
            "open": _prompt_text(config.open_prompt, "qa_open", "open_prompt"),
            "multiple_choice": _prompt_text(config.choice_prompt, "qa_multiple_choice", "choice_prompt"),
        }
        self.types = {f: types_text(types, f) for f in FORMATS}

    def render(self, format: str, description: str) -> str:
        return self.templates[format].format(types=self.types[format], description=description)


def check_config(config: QAConfig) -> None:
    """Refuse settings that cannot work before anything loads."""
    if not config.captions:
        raise ConfigError("Give the caption dataset: --captions DIR (the output of `vstar caption`).")
    if not config.model:
        raise ConfigError("Give the text model that writes the questions: --model MODEL.")
    unknown = [f for f in config.formats if f not in FORMATS]
    if unknown or not config.formats:
        raise ConfigError(f"--formats takes `open` and/or `multiple_choice`, not {config.formats}.")
    if config.choice_answer not in CHOICE_ANSWERS:
        raise ConfigError(f"--choice_answer must be `letter` or `full`, not {config.choice_answer!r}.")
    if not 0 < config.duplicate_threshold <= 100:
        raise ConfigError(f"--duplicate_threshold must be in (0, 100], not {config.duplicate_threshold}.")
    if config.limit is not None and config.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {config.limit}.")


def load_captions(config: QAConfig):
    """The caption split, with the columns `vstar qa` needs checked (one line naming a missing one and the fix)."""
    from vstar.io import load_split

    dataset = load_split(config.captions, config.split, revision=config.captions_revision)
    for column in (*REQUIRED_COLUMNS, config.description_column):
        if column not in dataset.column_names:
            fix = (
                "name the column holding the descriptions with --description_column"
                if column == config.description_column
                else "write it with `vstar caption`, or add the column"
            )
            raise InputError(
                f"{config.captions} (split {config.split!r}) has no column {column!r} (its columns: "
                f"{', '.join(dataset.column_names)}): {fix}."
            )
    if config.limit is not None:
        dataset = dataset.select(range(min(config.limit, len(dataset))))
    return dataset


def caption_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A unique key per caption row: its id, or `id#n` when one clip has rows of several teachers."""
    counts = Counter(r["id"] for r in rows)
    seen: Counter[str] = Counter()
    keys = []
    for row in rows:
        seen[row["id"]] += 1
        keys.append(row["id"] if counts[row["id"]] == 1 else f"{row['id']}#{seen[row['id']]}")
    return keys


def qa_requests(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], config: QAConfig, prompts: _Prompts
) -> list[GenerationRequest]:
    """One text-only request per (caption row, format) with a non-empty description."""
    requests = []
    for row, key in zip(rows, keys):
        description = (row.get(config.description_column) or "").strip()
        if not description:
            continue
        for format in config.formats:
            prompt = prompts.render(format, description)
            requests.append(GenerationRequest(key, format, "", prompt, None))
    return requests


def balanced_letters(keys: Sequence[tuple[str, str]], seed: int) -> dict[tuple[str, str], str]:
    """The correct letter of each choice item: every letter the same number of times (at most one apart), which
    item gets which drawn from `seed` and the set of kept items, so a rerun and any process give the same letters
    (a rerun that answers requests that failed before keeps more items, and may deal the letters anew).

    Args:
        keys: `(caption key, question type)` of every kept choice item.
        seed: the shuffle seed.
    """
    order = sorted(keys)
    random.Random(f"letters:{seed}").shuffle(order)
    return {key: LETTERS[i % len(LETTERS)] for i, key in enumerate(order)}


def shuffled_options(item: Item, letter: str, key: str, seed: int) -> list[str]:
    """The item's options with the answer at `letter` and the distractors in a seeded order."""
    distractors = [o for o in item.options if o != item.answer]
    random.Random(f"options:{seed}:{key}:{item.question_type}").shuffle(distractors)
    position = LETTERS.index(letter)
    return [*distractors[:position], item.answer, *distractors[position:]]


def _choice_prompt(question: str, options: Sequence[str], instruction: str) -> str:
    from vstar.verify.choice import options_text

    return f"{question}\n{options_text(list(options))}\n{instruction}"


class _Rows:
    """Builds the output rows of one caption row."""

    def __init__(self, config: QAConfig, types: Sequence[QuestionType], generator: str):
        self.config = config
        self.slugs = {t.name: t.slug for t in types}
        self.generator = generator
        instruction = "qa_choice_letter" if config.choice_answer == "letter" else "qa_choice_full"
        self.instruction = read_prompt(instruction)

    def base(self, row: Mapping[str, Any], key: str, format: str, suffix: str) -> dict[str, Any]:
        return {
            "id": f"{key}/{format}/{suffix}",
            "video": row["video"],
            "start": row.get("start"),
            "end": row.get("end"),
            "source": row.get("source"),
            "rationalized": False,
            "cycle": 0,
            "generator": self.generator,
            "clip_id": row["id"],
            "format": format,
            "teacher": row.get("teacher"),
            "data_source": row.get("source"),
            "options": [],
            "question_type": None,
            "question": "",
            "answer": "",
            "label": None,
            "messages": [],
            "task": "qa",
        }

    def item(
        self, row: Mapping[str, Any], key: str, format: str, item: Item, options: Sequence[str] | None
    ) -> dict[str, Any]:
        from vstar.schema import conversation

        out = self.base(row, key, format, self.slugs.get(item.question_type, "item"))
        if format == "multiple_choice" and options is not None:
            letter = LETTERS[list(options).index(item.answer)]
            answer = f"{letter}." if self.config.choice_answer == "letter" else f"{letter}. {item.answer}"
            prompt = _choice_prompt(item.question, options, self.instruction)
            label = {"question": item.question, "options": dict(zip(LETTERS, options)), "answer": letter}
            out.update(task="multiple_choice", options=list(options))
        else:
            answer, prompt = item.answer, item.question
            label = {"question": item.question, "answer": item.answer}
        out.update(
            question_type=item.question_type,
            question=item.question,
            answer=answer,
            label=json.dumps(label, ensure_ascii=False, sort_keys=True),
            messages=conversation(prompt, answer),
        )
        return out

    def rejected(
        self, row: Mapping[str, Any], key: str, format: str, problem: Problem, raw: str | None = None
    ) -> dict[str, Any]:
        from vstar.schema import conversation

        item = problem.item
        out = self.base(row, key, format, "rejected")
        if item is not None:
            options = item.options if isinstance(item.options, list) else []
            out.update(
                question_type=item.question_type,
                question=item.question,
                answer=item.answer,
                options=[str(o) for o in options],
                messages=conversation(item.question, item.answer) if item.question and item.answer else [],
            )
        elif problem.raw is not None:
            raw_item = problem.raw
            out["answer"] = raw_item if isinstance(raw_item, str) else json.dumps(raw_item, ensure_ascii=False)
        else:
            out["answer"] = raw or ""
        out["verification"] = rejected_verdict(problem.reason, problem.detail)
        return out


def assemble_qa(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    generations: Sequence[Mapping[str, Any]],
    config: QAConfig,
    types: Sequence[QuestionType],
    generator: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Parse and filter every raw output; return `(accepted rows, rejected rows, report)`.

    Args:
        rows: the caption rows (their videos may be functions that read the entry).
        keys: the rows' unique keys (`caption_keys`), the ids of the requests.
        generations: the generation rows (`id`, `attempt` = format, `answer`, `generator`, optional `error`).
        config: the settings.
        types: the question types.
        generator: the model that wrote the items, when the generation rows do not name it.
    """
    outputs = {(g["id"], g["attempt"]): g for g in generations}
    reasons: Counter[str] = Counter({reason: 0 for reason in REASONS})
    per_type: dict[str, Counter[str]] = {t.name: Counter() for t in types}
    kept: list[tuple[Mapping[str, Any], str, str, Item]] = []
    rejected: list[dict[str, Any]] = []
    builder = _Rows(config, types, generator)
    asked = unanswered = 0
    for row, key in zip(rows, keys):
        description = (row.get(config.description_column) or "").strip()
        for format in config.formats:
            if not description:
                problem = Problem(EMPTY_DESCRIPTION, f"the {config.description_column!r} of this row is empty")
                rejected.append(builder.rejected(row, key, format, problem, raw=""))
                reasons[EMPTY_DESCRIPTION] += 1
                continue
            asked += 1
            generation = outputs.get((key, format))
            if generation is None:
                unanswered += 1  # not answered yet (a run still going, or a clip skipped by the generation layer)
                continue
            builder.generator = generation.get("generator") or generator
            error = generation.get("error")
            if error:
                problem = Problem(TEACHER_FAILURE, str(error))
                rejected.append(builder.rejected(row, key, format, problem, raw=generation.get("answer") or ""))
                reasons[TEACHER_FAILURE] += 1
                continue
            items, problems = parse_output(generation.get("answer") or "", format, types)
            for problem in problems:
                rejected.append(builder.rejected(row, key, format, problem, raw=generation.get("answer")))
                reasons[problem.reason] += 1
            kept.extend((row, key, format, item) for item in items)
    # Near-duplicates among the questions of one video, per format (an open item and a choice item of one type
    # naturally ask the same thing).
    by_video: dict[tuple[str, str], list[int]] = {}
    for i, (row, _key, format, _item) in enumerate(kept):
        by_video.setdefault((row["id"], format), []).append(i)
    duplicate: dict[int, int] = {}
    for indices in by_video.values():
        repeats = near_duplicates([kept[i][3].question for i in indices], config.duplicate_threshold)
        duplicate.update({indices[i]: indices[j] for i, j in repeats.items()})
    survivors = []
    for i, (row, key, format, item) in enumerate(kept):
        if i in duplicate:
            earlier = kept[duplicate[i]]
            problem = Problem(
                NEAR_DUPLICATE,
                f"nearly repeats the {earlier[3].question_type!r} question {earlier[3].question!r} of this video",
                item,
            )
            rejected.append(builder.rejected(row, key, format, problem))
            reasons[NEAR_DUPLICATE] += 1
        else:
            survivors.append((row, key, format, item))
    letters = balanced_letters(
        [(key, item.question_type) for _row, key, format, item in survivors if format == "multiple_choice"],
        config.shuffle_seed,
    )
    accepted = []
    letter_counts: Counter[str] = Counter({letter: 0 for letter in LETTERS})
    for row, key, format, item in survivors:
        options = None
        if format == "multiple_choice":
            letter = letters[(key, item.question_type)]
            options = shuffled_options(item, letter, key, config.shuffle_seed)
            letter_counts[letter] += 1
        out = builder.item(row, key, format, item, options)
        out["verification"] = accepted_verdict()
        accepted.append(out)
        per_type[item.question_type][format] += 1
    numbered: Counter[str] = Counter()
    for out in rejected:  # ids in the order the items were read: `<key>/<format>/rejected-<n>`
        prefix = out["id"].rsplit("/", 1)[0]
        out["id"] = f"{prefix}/rejected-{numbered[prefix]}"
        numbered[prefix] += 1
    by_format = Counter(r["format"] for r in accepted)
    report = {
        "caption_rows": len(rows),
        "requests": asked,
        "unanswered_requests": unanswered,
        "accepted": len(accepted),
        "accepted_by_format": {f: by_format.get(f, 0) for f in config.formats},
        "rejected": len(rejected),
        "rejected_by_reason": dict(reasons),
        "correct_letters": dict(letter_counts) if "multiple_choice" in config.formats else {},
        "accepted_by_type": {name: {f: counts.get(f, 0) for f in config.formats} for name, counts in per_type.items()},
        "items_per_description": len(accepted) / asked if asked else None,
        "generator": builder.generator,
    }
    return accepted, rejected, report


def _write(output: Path, split: str, config_name: str, rows: Sequence[Mapping[str, Any]]) -> int:
    from vstar.io import write_parquet

    path = split_path(output, split, config_name)
    if not rows:
        path.unlink(missing_ok=True)
        return 0
    return write_parquet(path, rows, QA_FEATURES)


def write_qa_dataset(
    output: str | Path,
    accepted: Sequence[Mapping[str, Any]],
    rejected: Sequence[Mapping[str, Any]],
    report: Mapping[str, Any],
    split: str = "train",
    command: str = "vstar qa",
) -> Path:
    """Write the `default` and `rejected` configs, `qa_report.json` and the card.

    Args:
        output: the dataset directory.
        accepted, rejected: the rows (`assemble_qa`).
        report: the counts (`assemble_qa`).
        split: the split name of both configs.
        command: the command named in the card.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    counts = {
        "default": {split: _write(output, split, "default", accepted)},
        "rejected": {split: _write(output, split, "rejected", rejected)},
    }
    (output / "qa_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if counts["default"][split] or counts["rejected"][split]:
        write_dataset_card(
            output,
            counts,
            pretty_name=f"{output.name} (vstar QA instruction dataset)",
            description=(
                "Question-answer items of up to 16 types per video description (LLaVA-Video-178K's types), "
                f"open-ended and multiple choice, written by `{report.get('generator') or 'a text model'}`."
            ),
            command=command,
        )
    return output


def _lazy_rows(dataset) -> list[dict[str, Any]]:
    """Every row without its video, and `video` as a function reading the entry when the row is written."""
    import functools

    videos = dataset.select_columns(["video"])
    rows = dataset.remove_columns(["video"]).to_list()

    def video(i: int) -> Any:
        return videos[i]["video"]

    for i, row in enumerate(rows):
        row["video"] = functools.partial(video, i)
    return rows


def _materialized(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "video": r["video"]() if callable(r["video"]) else r["video"]} for r in rows]


def generate_qa(
    config: QAConfig, settings: GenerationSettings | None = None, backend: GenerationBackend | None = None
) -> dict[str, Any]:
    """Write question-answer items from a caption dataset: the Python API of `vstar qa`.

    Args:
        config: what to read and write.
        settings: generation settings (backend, batch size, `max_new_tokens`, ...); defaults to
            `GenerationSettings(max_new_tokens=2048)`.
        backend: an already loaded backend (default: built from `config.model` and `settings`).

    Returns:
        The report written to `OUTPUT/qa_report.json` (only the main process assembles; the others return `{}`).
    """
    from vstar.distributed import is_main_process
    from vstar.generate.base import get_backend, read_generations, read_skipped, run_generation

    check_config(config)
    settings = settings or GenerationSettings(max_new_tokens=2048)
    if settings.max_new_tokens < 1024:
        logger.warning(
            "max_new_tokens is %d: a JSON list of 16 question-answer items often needs 1,000-2,000 tokens; a cut-off "
            "list is rejected as malformed.",
            settings.max_new_tokens,
        )
    types = load_question_types(config.question_types)
    prompts = _Prompts(config, types)
    dataset = load_captions(config)
    rows = _lazy_rows(dataset)
    keys = caption_keys(rows)
    requests = qa_requests(rows, keys, config, prompts)
    output = Path(config.output)
    work = output / "generations"
    if requests:
        backend = backend or get_backend(settings, config.model, config.adapter)
        run_generation(requests, backend, work, PASS_NAME, settings, description="QA items")
    if not is_main_process():
        return {}
    generations = read_generations(work, PASS_NAME) if work.exists() else []
    # Requests the teacher could not answer (a server's 4xx, 5xx or timeouts past the retries) have no answer row;
    # the generation layer lists them, and they are rejected here with what happened (asked again next run).
    generations += [failure_row(entry) for entry in (read_skipped(work, PASS_NAME) if work.exists() else [])]
    generator = backend.generator if backend is not None else config.model
    accepted, rejected, report = assemble_qa(rows, keys, generations, config, types, generator=generator)
    report = {"captions": config.captions, "split": config.split, **report}
    accepted, rejected = _materialized(accepted), _materialized(rejected)
    write_qa_dataset(output, accepted, rejected, report, split=config.split, command=_command(config))
    logger.info(
        "%d QA items from %d descriptions (%s); %d rejected (%s) -> %s",
        report["accepted"],
        report["caption_rows"],
        ", ".join(f"{k} {v}" for k, v in report["accepted_by_format"].items()),
        report["rejected"],
        ", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items() if v) or "none",
        output,
    )
    if report["unanswered_requests"]:
        logger.warning("%d requests have no answer yet: run the command again.", report["unanswered_requests"])
    return report


def failure_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A request the generation layer skipped (`read_skipped`) as a generation row carrying its `error`."""
    status = f" (HTTP {entry['status']})" if entry.get("status") else ""
    error = f"{entry.get('kind') or 'failed'}{status}: {entry.get('error') or 'no reason given'}"
    return {"id": entry["id"], "attempt": entry["attempt"], "answer": "", "error": error}


def _command(config: QAConfig) -> str:
    return f"vstar qa --captions {config.captions} --model {config.model} --output {config.output}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`vstar qa`: parse the settings (recipe + flags) and write the QA dataset."""
    from vstar.configs import check_reference, parse_configs

    config, settings = parse_configs((QAConfig, GenerationSettings), argv)
    check_config(config)
    check_reference(config.captions, "captions", "caption dataset")
    check_reference(config.model, "model", "model")
    if config.adapter:
        check_reference(config.adapter, "adapter", "adapter")
    report = generate_qa(config, settings)
    if report:
        print(json.dumps({k: report[k] for k in ("accepted", "rejected", "rejected_by_reason")}, indent=2))
    return report


__all__ = ["QAConfig", "assemble_qa", "generate_qa", "main", "write_qa_dataset"]
