"""LLaVA-Video conversation JSON (LLaVA-Video-178K's released files, the official Video-STaR JSON, `vstar export`)
as a vstar instruction dataset.

Each record `{"id", "video", "conversations": [{"from": "human" | "gpt" | "system", "value"}], "data_source"}`
becomes one row: `messages` in TRL's format with the video first in the first user turn, every turn's text kept
exactly (only the `<image>` / `<video>` token that starts or ends the first human turn is dropped: it stands for the
video, which `messages` holds as its own part). A two-turn record whose question lists options `A. ...` to `D. ...`
and whose answer is a letter is a `multiple_choice` row (its `options` and `label` filled), so the
`multiple_choice` task verifies and evaluates it. Records whose video file is missing or empty, image-only records
and malformed records are left out and listed in `build_report.json`; they never stop the build.

```bash
vstar build llava --annotations 0_30_s_academic_v0_1_mc_qa_processed.json --videos LLaVA-Video-178K/ \
    --output data/llava_academic_mc
```
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vstar.errors import InputError
from vstar.sources.base import SOURCES, check_writable, command_line, skip

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
MEDIA_TOKENS = ("<image>", "<video>")
_OPTION_LINE = re.compile(r"^([A-D])\.\s+(.*\S)\s*$")
_LETTER_ANSWER = re.compile(r"^\(?([A-D])\)?(?:[.:)]\s*(.*))?$", re.DOTALL)


@dataclass
class LlavaConfig:
    """Settings of the LLaVA-Video conversation JSON reader."""

    annotations: list[str] = field(
        default_factory=list,
        metadata={
            "help": "JSON files of records (a JSON list or JSON Lines), e.g. LLaVA-Video-178K's *_qa_processed.json."
        },
    )
    videos: str | None = field(default=None, metadata={"help": "Folder the records' `video` paths are relative to."})
    output: str = field(default="data/llava", metadata={"help": "Output directory (Hub layout)."})
    split: str = field(default="train", metadata={"help": "Split the rows are written to."})
    name: str | None = field(
        default=None, metadata={"help": "`source` of records without a `data_source` (default: the file's name)."}
    )
    media_tokens: list[str] = field(
        default_factory=lambda: list(MEDIA_TOKENS),
        metadata={"help": "Tokens that stand for the video at the start (or end) of the first human turn."},
    )
    license: str = field(default="other", metadata={"help": "Licence field of the card."})


def _strip_media(text: str, tokens: tuple[str, ...]) -> tuple[str, bool]:
    """The first human turn without the media token that starts (or ends) it, and whether there was one."""
    for token in tokens:
        if text.startswith(token):
            rest = text[len(token) :]
            return (rest[1:] if rest.startswith("\n") else rest), True
        if text.endswith(token):
            rest = text[: -len(token)]
            return (rest[:-1] if rest.endswith("\n") else rest), True
    return text, False


def messages_from_conversations(
    turns: Any, media_tokens: tuple[str, ...] = MEDIA_TOKENS
) -> tuple[list[dict[str, Any]], bool]:
    """LLaVA turns as TRL messages (the video first in the first user turn); raises `ValueError` saying why not.

    Args:
        turns: the record's `conversations`.
        media_tokens: the tokens that stand for the video in the first human turn.

    Returns:
        `(messages, had_media_token)`.
    """
    if not isinstance(turns, list) or not turns:
        raise ValueError("`conversations` is not a non-empty list of turns")
    messages, had_token, first_human = [], False, True
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str) or "from" not in turn:
            raise ValueError(f"turn {i} is not an object with `from` and a text `value`")
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise ValueError(f"turn {i} is from {turn['from']!r}, not one of {', '.join(ROLES)}")
        text = turn["value"]
        if role == "user" and first_human:
            text, had_token = _strip_media(text, media_tokens)
            content = [{"type": "video", "text": None}, {"type": "text", "text": text}]
            first_human = False
        else:
            content = [{"type": "text", "text": text}]
        messages.append({"role": role, "content": content})
    if first_human:
        raise ValueError("no human turn")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last turn is not from gpt (nothing to train on)")
    return messages, had_token


def choice_item(question: str, answer: str) -> tuple[str, list[str], str] | None:
    """`(question, options, letter)` when a question lists options `A.`-`D.` and the answer is one of the letters."""
    lines = question.split("\n")
    options, start = [], None
    for i, line in enumerate(lines):
        match = _OPTION_LINE.match(line)
        if match and match.group(1) == "ABCD"[len(options)]:
            start = i if start is None else start
            options.append(match.group(2))
        elif options:
            break
    picked = _LETTER_ANSWER.match(answer.strip())
    if len(options) < 2 or not picked or "ABCD".index(picked.group(1)) >= len(options):
        return None
    return "\n".join(lines[:start]).strip(), options, picked.group(1)


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """`(position, record)` of a JSON list file or a JSON Lines file; a bad file is one line naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--annotations {path} does not exist: give LLaVA-Video JSON files.") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text ({err.reason}): give LLaVA-Video JSON files.") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}:{err.lineno}: not valid JSON ({err.msg}): fix the file, or give JSON Lines (a record a line)."
            ) from None
        for i, record in enumerate(records):
            yield f"{path.name}[{i}]", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path.name}:{number}", json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{path.name}:{number}", ValueError(f"not JSON ({err.msg})")


class _Files:
    """Whether each video exists (checked once per file: many records share one video)."""

    def __init__(self, root: Path):
        self.root = root
        self._seen: dict[str, str | None] = {}

    def problem(self, relative: str) -> tuple[Path, str | None]:
        path = self.root / relative
        key = str(path)
        if key not in self._seen:
            try:
                size = os.stat(path).st_size
                self._seen[key] = None if size else f"empty: {path} has 0 bytes"
            except OSError as err:
                self._seen[key] = f"missing: {path} ({err.strerror})"
        return path, self._seen[key]


def llava_rows(config: LlavaConfig, report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The usable rows of the annotation files; every other record is listed in `report["skipped"]`."""
    from vstar.synthesize.qa_schema import accepted_verdict

    root = Path(config.videos)
    files = _Files(root)
    tokens = tuple(config.media_tokens)
    ids: Counter[str] = Counter()
    for annotation in config.annotations:
        path = Path(annotation)
        name = config.name or path.stem
        for where, record in tqdm(read_records(path), desc=path.name, unit="record", leave=False):
            report["rows_read"] += 1
            if isinstance(record, Exception):
                skip(report, where, None, f"value: {record}")
                continue
            if not isinstance(record, Mapping):
                skip(report, where, None, "value: the record is not a JSON object")
                continue
            clip_id = str(record.get("id") if record.get("id") is not None else where)
            video = record.get("video")
            if not isinstance(video, str) or not video:
                kind = "an image record" if record.get("image") else "no `video` key"
                skip(report, where, None, f"no video: {kind}", clip_id)
                continue
            try:
                messages, had_token = messages_from_conversations(record.get("conversations"), tokens)
            except ValueError as err:
                skip(report, where, video, f"value: {err}", clip_id)
                continue
            file, problem = files.problem(video)
            if problem is not None:
                skip(report, where, str(file), problem, clip_id)
                continue
            ids[clip_id] += 1
            if ids[clip_id] > 1:
                skip(report, where, video, f"duplicate: the id {clip_id} is listed twice (the first is kept)", clip_id)
                continue
            if not had_token:
                report["without_media_token"] += 1
            question = next(m for m in messages if m["role"] == "user")["content"][1]["text"]
            answer = messages[-1]["content"][0]["text"]
            row = {
                "id": clip_id,
                "video": {"path": os.path.abspath(file), "bytes": None},
                "start": record.get("start"),
                "end": record.get("end"),
                "source": record.get("data_source") or name,
                "task": "llava",
                "label": None,
                "question": question,
                "answer": answer,
                "messages": messages,
                "rationalized": False,
                "cycle": 0,
                "verification": accepted_verdict("imported"),
                "generator": None,
                "clip_id": video,
                "question_type": record.get("question_type"),
                "format": "open",
                "options": [],
                "teacher": None,
                "data_source": record.get("data_source") or name,
            }
            choice = choice_item(question, answer) if len(messages) == 2 else None
            if choice is not None:
                bare, options, letter = choice
                label = {"question": bare, "options": dict(zip("ABCD", options)), "answer": letter}
                row.update(task="multiple_choice", format="multiple_choice", options=options, question=bare)
                row["label"] = json.dumps(label, ensure_ascii=False, sort_keys=True)
            report["formats"][row["format"]] += 1
            yield row


@SOURCES.register("llava")
def build_llava(config: LlavaConfig | None = None, **overrides) -> Path:
    """LLaVA-Video conversation JSON (LLaVA-Video-178K, Video-STaR, `vstar export`) as an instruction dataset.

    Args:
        config: the settings (or pass them as keyword arguments).
    """
    from vstar.io import ParquetRowWriter
    from vstar.synthesize.qa_schema import QA_FEATURES, split_path, write_dataset_card

    config = config or LlavaConfig(**overrides)
    if not config.annotations:
        raise InputError("Give the LLaVA-Video JSON files: --annotations FILE.json [FILE2.json ...].")
    if not config.videos:
        raise InputError("Give the folder the records' videos are relative to: --videos DIR.")
    if not Path(config.videos).is_dir():
        raise InputError(f"--videos {config.videos} is not a folder: give the folder the `video` paths start from.")
    output = check_writable(config.output)
    report: dict[str, Any] = {"rows_read": 0, "skipped": [], "without_media_token": 0, "formats": Counter()}
    with ParquetRowWriter(split_path(output, config.split), QA_FEATURES, batch_size=256) as writer:
        for row in llava_rows(config, report):
            writer.write(row)
    written = writer.rows_written
    report["rows_written"] = written
    report["rows_per_split"] = {config.split: written}
    report["formats"] = dict(report["formats"])
    report["skipped_by_reason"] = dict(Counter(e["reason"].split(":", 1)[0] for e in report["skipped"]))
    report["complete"] = True
    (output / "build_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if not written:
        split_path(output, config.split).unlink(missing_ok=True)
        first = report["skipped"][0] if report["skipped"] else None
        raise InputError(
            f"No usable records: all {report['rows_read']} were left out, so no dataset was written; every record and "
            f"reason is in {output / 'build_report.json'}"
            + (f" (the first: {first['row']}: {first['reason']})." if first else ".")
        )
    for kind, count in report["skipped_by_reason"].items():
        logger.warning("%d records left out (%s); listed in %s", count, kind, output / "build_report.json")
    write_dataset_card(
        output,
        {"default": {config.split: written}},
        pretty_name=f"{output.name} (vstar instruction dataset from LLaVA-Video JSON)",
        description=(
            f"{written} conversations read from {', '.join(Path(a).name for a in config.annotations)} "
            f"(videos under `{config.videos}`); records left out are listed in `build_report.json`."
        ),
        command=command_line("llava", config),
        license=config.license,
    )
    logger.info("Wrote %d rows to %s; %d records left out", written, output, len(report["skipped"]))
    return output


build_llava.config_class = LlavaConfig
