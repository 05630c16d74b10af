"""`vstar caption`: recursive three-level captions of every clip, from one or more teacher models.

LLaVA-Video-178K's recurrence (DESIGN.md section 7). Level 1 describes every `clip_seconds` window from its frames
(`fps` per second), with the latest level-2 summary and the level-1 descriptions written since it as context, so a
person or object keeps one name across the video. Level 2, at every `summary_seconds` boundary, summarises the
previous summary and the level-1 descriptions since it (text only). Level 3 describes the whole video from the
latest summary and the level-1 descriptions after it (text only). A clip shorter than one window gets one level-1
description and the level-3 one.

Work is done in rounds: round k asks step k of every clip at once (window k, or the summary due there), through
`vstar.generate.base.run_generation`, with each teacher loaded once, so a batch holds windows of many clips. Every
round of every teacher is its own generation pass under `OUTPUT/generations/`: a killed run asks no finished
window again, and under `torchrun` / `accelerate launch` each process answers its share of every round.

With `label_hint` the task's label text is given to the teacher as a hint (Video-STaR's rationalization), and the
task's verifier checks that the level-3 description states the label. The output is a caption dataset in Hub layout
with a card, one row per (clip, teacher); unusable outputs and descriptions that fail the label check are in the
`rejected` config with the reason.

```bash
vstar caption --dataset data/clips --split train --teacher Qwen/Qwen2.5-VL-7B-Instruct --output data/captions
vstar caption --dataset data/k700 --teacher Qwen/Qwen2.5-VL-7B-Instruct --teacher endpoint:gpt-4o \
    --endpoint_url https://api.openai.com/v1 --label_hint true --task action_recognition --output data/captions
vstar caption --config recipes/Qwen2.5-VL-7B-Instruct/kinetics700/config_caption_vllm.yaml
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from datasets import Features, Value, Video

from vstar.configs import _check_range, check_reference, parse_configs
from vstar.errors import ConfigError, InputError
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    get_backend,
    read_generations,
    read_skipped,
    run_generation,
)
from vstar.schema import VERIFICATION
from vstar.synthesize.caption_parse import clean_caption

logger = logging.getLogger(__name__)

#: A described stretch of a clip, in seconds of the video file (the timeline of the row's `start` and `end`).
SPAN = {"start": Value("float64"), "end": Value("float64"), "text": Value("string")}

#: The columns of every caption dataset, in order; the source's own columns (labels, `source`, ...) follow them.
CAPTION_FEATURES = Features(
    {
        "id": Value("string"),
        "video": Video(decode=False),
        "start": Value("float64"),
        "end": Value("float64"),
        "teacher": Value("string"),
        "clip_descriptions": [SPAN],
        "summaries": [SPAN],
        "description": Value("string"),
    }
)

#: What the `rejected` config adds: why the row is there, the label check's verdict, and every raw output asked.
REJECTED_COLUMNS = {
    "reason": Value("string"),
    "verification": VERIFICATION,
    "raw_outputs": [
        {"level": Value("int32"), "start": Value("float64"), "end": Value("float64"), "text": Value("string")}
    ],
}

REPORT_FILE = "caption_report.json"
WORK_DIR = "generations"
ATTEMPT = "caption"

# Each prompt file and the fields its template must use.
PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "level1": ("start", "end", "context", "hint"),
    "level2": ("end", "context", "hint"),
    "level3": ("duration", "context", "hint"),
    "hint": ("label",),
    "hint_final": ("label",),
}


def caption_features(source: Features | Mapping[str, Any] | None = None) -> Features:
    """The features of a caption dataset: `CAPTION_FEATURES`, then the source's other columns.

    Args:
        source: the source dataset's features (its `id`, `video`, `start`, `end` are the caption's own).
    """
    extra = {k: v for k, v in (source or {}).items() if k not in CAPTION_FEATURES and k not in REJECTED_COLUMNS}
    return Features({**CAPTION_FEATURES, **extra})


def rejected_features(features: Features) -> Features:
    """The `rejected` config's features: a caption dataset's, plus `REJECTED_COLUMNS`."""
    return Features({**features, **REJECTED_COLUMNS})


# --- prompts ---------------------------------------------------------------------------------------------------


def read_caption_prompt(name: str) -> str:
    """A packaged caption prompt (`prompts/caption_<name>.txt`), without the trailing newline."""
    path = resources.files("vstar.synthesize") / "prompts" / f"caption_{name}.txt"
    return path.read_text(encoding="utf-8").rstrip("\n")


@dataclass
class CaptionPrompts:
    """The templates of the three levels and of the label hint (packaged files unless a recipe overrides them).

    Args:
        level1, level2, level3: the level templates (`str.format` fields: see `PROMPT_FIELDS`).
        hint: the hint sentence of levels 1 and 2, with `{label}`.
        hint_final: the hint sentence of level 3, which asks the description to state the label.
    """

    level1: str = field(default_factory=lambda: read_caption_prompt("level1"))
    level2: str = field(default_factory=lambda: read_caption_prompt("level2"))
    level3: str = field(default_factory=lambda: read_caption_prompt("level3"))
    hint: str = field(default_factory=lambda: read_caption_prompt("hint"))
    hint_final: str = field(default_factory=lambda: read_caption_prompt("hint_final"))

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> CaptionPrompts:
        """The packaged prompts with a recipe's overrides (each a text or a `.txt` path), every template checked.

        Args:
            overrides: `{name: text or path}`, names among `PROMPT_FIELDS`.
        """
        from vstar.tasks.base import _prompt_value, check_template

        prompts = cls()
        for name, value in (overrides or {}).items():
            if name not in PROMPT_FIELDS:
                raise ConfigError(f"Unknown caption prompt {name!r}; the prompts are: {', '.join(PROMPT_FIELDS)}.")
            text, where = _prompt_value(name, value)
            if not isinstance(text, str):
                raise ConfigError(f"The caption prompt {name!r} must be a text or a .txt file, not {value!r}.")
            check_template(text, name, PROMPT_FIELDS[name], where)
            setattr(prompts, name, text)
        return prompts


# --- settings --------------------------------------------------------------------------------------------------


@dataclass
class CaptionConfig:
    """`vstar caption`: three-level captions of every clip of a source dataset, one row per (clip, teacher)."""

    dataset: str = field(default="", metadata={"help": "Source dataset (directory or Hub repo) with the clips."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Source dataset revision."})
    split: str = field(default="train", metadata={"help": "Split to caption."})
    teacher: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Teacher model (repeat the flag for several): a directory, a Hub id, or a served model's name; "
            "`BACKEND:MODEL` picks another backend for that teacher (e.g. `endpoint:gpt-4o`, `vllm:Qwen/...`)."
        },
    )
    output: str = field(default="data/captions", metadata={"help": "Output caption dataset directory (Hub layout)."})
    clip_seconds: float = field(default=10.0, metadata={"help": "Length of a level-1 window in seconds."})
    summary_seconds: float = field(
        default=30.0, metadata={"help": "A level-2 summary every this many seconds (a multiple of clip_seconds)."}
    )
    fps: float = field(default=1.0, metadata={"help": "Frames per second shown to the teacher at level 1."})
    label_hint: bool = field(
        default=False,
        metadata={
            "help": "Give the task's label text to the teacher as a hint, and reject level-3 descriptions that do "
            "not state the label (needs --task)."
        },
    )
    task: str | None = field(default=None, metadata={"help": "Task whose label text and verifier label_hint uses."})
    task_options: dict | str | None = field(default=None, metadata={"help": "Task options (mapping or JSON)."})
    prompts: dict | str | None = field(
        default=None,
        metadata={
            "help": "Prompt overrides (mapping or JSON): level1, level2, level3, hint, hint_final, each a text or a "
            ".txt file."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Caption only the first N clips of the split."})

    def __post_init__(self):
        if isinstance(self.teacher, str):
            self.teacher = [self.teacher]
        for name in ("task_options", "prompts"):
            if isinstance(getattr(self, name), str):
                from vstar.tasks.base import parse_task_options

                setattr(self, name, parse_task_options(getattr(self, name)) or None)
        _check_range(self, "clip_seconds", 0, low_open=True)
        _check_range(self, "summary_seconds", 0, low_open=True)
        _check_range(self, "fps", 0, low_open=True)
        _check_range(self, "limit", 1, optional=True)
        ratio = self.summary_seconds / self.clip_seconds
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ConfigError(
                f"summary_seconds ({self.summary_seconds:g}) must be a multiple of clip_seconds "
                f"({self.clip_seconds:g}): a summary closes a run of whole windows."
            )
        if self.fps * self.clip_seconds < 1:
            raise ConfigError(
                f"A {self.clip_seconds:g} s window at fps {self.fps:g} holds no frame: raise --fps or --clip_seconds."
            )
        if self.label_hint and not self.task:
            raise ConfigError("label_hint needs the task whose labels it hints and verifies: add --task NAME.")
        if len(set(self.teacher)) != len(self.teacher):
            raise ConfigError(f"A teacher is given twice: {', '.join(self.teacher)}; give each once.")


def split_teacher(teacher: str, default_backend: str) -> tuple[str, str]:
    """`(backend, model)` of a `--teacher` value: `BACKEND:MODEL` when BACKEND is a registered backend, else the
    default backend and the value as given (a Windows path or `org/model` is not taken for a backend).

    Args:
        teacher: the flag's value.
        default_backend: the settings' backend.
    """
    import vstar.generate  # noqa: F401  (registers the built-in backends)

    prefix, sep, rest = teacher.partition(":")
    if sep and rest and prefix in BACKENDS.names():
        return prefix, rest
    return default_backend, teacher


def teacher_slug(teacher: str) -> str:
    """A file-name-safe key of a teacher: its readable tail and a hash of the whole value."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", teacher).strip("-.")[-40:] or "teacher"
    return f"{tail}-{hashlib.sha1(teacher.encode()).hexdigest()[:8]}"


def teacher_name(model: str, backend_name: str, backend: GenerationBackend, settings: GenerationSettings) -> str:
    """What the `teacher` column records: `model@revision` (a folder's content hash or a Hub commit); a served
    model has no weights here, so its revision is the server it was asked through."""
    if backend_name == "endpoint":
        from urllib.parse import urlparse

        host = urlparse(settings.endpoint_url or "").netloc or "endpoint"
        return f"{model}@{host}"
    from vstar.lineage import generator_name

    try:
        return generator_name(model)
    except (FileNotFoundError, OSError) as error:
        logger.warning("Cannot pin %s (%s): recorded as %s", model, error, backend.generator or model)
        return backend.generator or model


# --- the schedule of one clip ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One request of a clip's recurrence; times in seconds from the clip's start.

    Args:
        level: 1 (a window's frames), 2 (a summary up to `end`) or 3 (the whole clip).
        start, end: the window (level 1), or the stretch described so far (levels 2 and 3 start at 0).
    """

    level: int
    start: float
    end: float


def plan_steps(duration: float, clip_seconds: float, summary_seconds: float, fps: float) -> list[Step]:
    """The steps of a clip in the order they are asked: level-1 windows, a summary at every `summary_seconds`
    boundary that more video follows, and level 3 last.

    A last window shorter than one frame interval joins the window before it. A clip shorter than one frame
    interval has no steps.

    Args:
        duration: the clip's length in seconds.
        clip_seconds, summary_seconds, fps: the settings (`summary_seconds` a multiple of `clip_seconds`).
    """
    interval = 1.0 / fps
    if duration < interval:
        return []
    bounds = []
    start = 0.0
    while start < duration - 1e-9:
        bounds.append([start, min(start + clip_seconds, duration)])
        start += clip_seconds
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < interval:
        tail = bounds.pop()
        bounds[-1][1] = tail[1]
    per_summary = round(summary_seconds / clip_seconds)
    steps = []
    for k, (start, end) in enumerate(bounds):
        steps.append(Step(1, start, end))
        if (k + 1) % per_summary == 0 and k + 1 < len(bounds):
            steps.append(Step(2, 0.0, end))
    steps.append(Step(3, 0.0, duration))
    return steps


@dataclass
class ClipState:
    """One clip's progress with one teacher: the steps done, their texts, and why it stopped if it did."""

    id: str
    video: Any
    offset: float
    duration: float
    steps: list[Step]
    hint: str | None = None
    done: list[tuple[Step, str]] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self.done) == len(self.steps)

    @property
    def next_step(self) -> Step:
        return self.steps[len(self.done)]

    def span(self, step: Step, text: str | None = None) -> dict[str, Any]:
        return {"start": self.offset + step.start, "end": self.offset + step.end, "text": text}

    def context(self) -> tuple[Step | None, str | None, list[tuple[Step, str]]]:
        """The latest summary (step and text) and the level-1 descriptions written after it."""
        summary, since = None, []
        for step, text in self.done:
            if step.level == 2:
                summary, since = (step, text), []
            elif step.level == 1:
                since.append((step, text))
        return (summary[0] if summary else None), (summary[1] if summary else None), since

    def record(self, step: Step, raw: str | None) -> None:
        self.raw.append({"level": step.level, **self.span(step, raw)})
        text, reason = clean_caption(raw)
        if text is None:
            where = f"{step.start:g}-{step.end:g} s" if step.level == 1 else f"up to {step.end:g} s"
            self.failure = f"level {step.level} ({where}): {reason}"
        else:
            self.done.append((step, text))


def _seconds(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def render_prompt(state: ClipState, step: Step, prompts: CaptionPrompts) -> str:
    """The prompt of a clip's next step, with its recurrent context (see the module docstring)."""
    summary_step, summary, since = state.context()
    lines = []
    if summary is not None:
        lines.append(f"Summary of the video up to second {_seconds(summary_step.end)}: {summary}")
    lines += [f"Second {_seconds(s.start)} to {_seconds(s.end)}: {text}" for s, text in since]
    if step.level == 1:
        context = (
            "What the earlier parts show:\n" + "\n".join(lines) if lines else "This part is where the video starts."
        )
    else:
        context = "\n".join(lines)
    hint = ""
    if state.hint is not None:
        hint = (prompts.hint_final if step.level == 3 else prompts.hint).format(label=state.hint)
    template = {1: prompts.level1, 2: prompts.level2, 3: prompts.level3}[step.level]
    values = {"start": _seconds(step.start), "end": _seconds(step.end), "duration": _seconds(state.duration)}
    text = template.format(context=context, hint=hint, **values)
    return re.sub(r"\n{2,}", "\n", text).strip()


# --- running the rounds ------------------------------------------------------------------------------------------


def _clip_window(row: Mapping[str, Any]) -> tuple[float, float | None, str | None]:
    """(offset, duration, error) of a source row: its window, else its `duration` column, else a probe."""
    from vstar.sources.probe import probe_video

    start = float(row.get("start") or 0.0)
    if row.get("end") is not None:
        return start, float(row["end"]) - start, None
    if row.get("duration") is not None:
        return start, float(row["duration"]) - start, None
    video = row["video"]() if callable(row["video"]) else row["video"]
    if isinstance(video, Mapping):
        video = video.get("bytes") or video.get("path")
    probe = probe_video(video)
    if not probe.ok:
        return start, None, probe.error
    if probe.duration is None:
        return start, None, "undecodable: the video's duration is unknown"
    return start, probe.duration - start, None


def _states(rows: Sequence[Mapping[str, Any]], config: CaptionConfig, task) -> tuple[list[ClipState], dict[str, str]]:
    """One state per usable clip, and the reason of each clip that cannot be captioned at all."""
    states, unusable = [], {}
    for row in rows:
        offset, duration, error = _clip_window(row)
        if error is not None:
            unusable[row["id"]] = f"video: {error}"
            continue
        steps = plan_steps(duration, config.clip_seconds, config.summary_seconds, config.fps)
        if not steps:
            unusable[row["id"]] = f"too short: {duration:.3f} s holds no frame at {config.fps:g} frame(s) per second"
            continue
        hint = None
        if config.label_hint:
            label = task.label(row)
            if all(v is None for v in label.values()):
                unusable[row["id"]] = "no label to hint: the row's label is empty"
                continue
            hint = task.label_text(label)
        states.append(ClipState(row["id"], row["video"], offset, duration, steps, hint))
    return states, unusable


def caption_rounds(
    states: Sequence[ClipState],
    backend: GenerationBackend,
    settings: GenerationSettings,
    work_dir: str | Path,
    slug: str,
    prompts: CaptionPrompts,
) -> dict[str, int]:
    """Ask every clip's steps with one teacher, round by round, filling the states; returns requests per level.

    Round k asks step k of every clip still going; its level-1 and its text-only requests are separate passes
    (`<slug>-r<k>-l<level>`), resumable and sharded by `run_generation`.

    Args:
        states: the clips (fresh states; answers already on disk are read back, not asked again).
        backend: the teacher.
        settings: generation settings (`caption_settings`: level 1 samples `fps` frames per second).
        work_dir: where the passes' chunk files are.
        slug: the teacher's key in the pass names.
        prompts: the templates.
    """
    asked: Counter[str] = Counter()
    round_index = 0
    while True:
        going = [s for s in states if not s.finished]
        if not going:
            break
        by_level: dict[int, list[ClipState]] = {}
        for state in going:
            by_level.setdefault(state.next_step.level, []).append(state)
        for level, group in sorted(by_level.items()):
            name = f"{slug}-r{round_index:04d}-l{level}"
            requests = []
            for state in group:
                step = state.next_step
                requests.append(
                    GenerationRequest(
                        state.id,
                        ATTEMPT,
                        f"level {level}: {_seconds(step.start)}-{_seconds(step.end)} s",
                        render_prompt(state, step, prompts),
                        state.video if level == 1 else None,
                        state.offset + step.start if level == 1 else None,
                        state.offset + step.end if level == 1 else None,
                    )
                )
            what = f"round {round_index + 1}, level {level}"
            asked[f"level{level}"] += run_generation(requests, backend, work_dir, name, settings, description=what)
            answers = {g["id"]: g["answer"] for g in read_generations(work_dir, name)}
            skipped = {e["id"]: e["error"] for e in read_skipped(work_dir, name)}
            for state in group:
                step = state.next_step
                if state.id in answers:
                    state.record(step, answers[state.id])
                else:
                    error = skipped.get(state.id, "no answer was written")
                    state.raw.append({"level": level, **state.span(step, None)})
                    state.failure = f"level {level} ({_seconds(step.start)}-{_seconds(step.end)} s): {error}"
        round_index += 1
    return dict(asked)


def caption_settings(config: CaptionConfig, settings: GenerationSettings) -> GenerationSettings:
    """The generation settings of a caption run: level-1 windows sampled at `config.fps` frames per second."""
    return replace(settings, video_fps=config.fps, num_frames=None)


# --- output ------------------------------------------------------------------------------------------------------


def _row(source: Mapping[str, Any], features: Features, teacher: str, state: ClipState | None) -> dict[str, Any]:
    # The video entry stays a function of the source until the row is written: embedded clips are not all held.
    row = {k: source.get(k) for k in features if k not in CAPTION_FEATURES}
    row.update(id=source["id"], video=source["video"], start=source.get("start"), end=source.get("end"))
    row["teacher"] = teacher
    spans = {1: [], 2: []}
    description = None
    for step, text in state.done if state is not None else []:
        if step.level == 3:
            description = text
        else:
            spans[step.level].append(state.span(step, text))
    row.update(clip_descriptions=spans[1], summaries=spans[2], description=description)
    return row


def _dataset_info(directory: Path, features: Features, counts: Mapping[str, Mapping[str, int]]) -> list[dict]:
    """`dataset_info` of both configs, each with its own features (`rejected` has more columns)."""
    from vstar.io import dataset_info_yaml

    infos = []
    for name, splits in counts.items():
        config_features = features if name == "default" else rejected_features(features)
        info = dataset_info_yaml(directory, config_features, {name: splits})
        for entry in info if isinstance(info, list) else [info]:
            infos.append({"config_name": name, **{k: v for k, v in entry.items() if k != "config_name"}})
    return infos


def _write_card(directory: Path, features: Features, counts, report: dict[str, Any], config: CaptionConfig) -> None:
    from vstar.cards import markdown_table, write_card
    from vstar.io import configs_yaml
    from vstar.sources.base import _feature_type

    metadata = {
        "pretty_name": f"{Path(config.output).name} (captions)",
        "license": "other",
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "captions", "llava-video-178k"],
        "configs": configs_yaml({name: list(splits) for name, splits in counts.items()}),
        "dataset_info": _dataset_info(directory, features, counts),
    }
    teacher_rows = [
        {"teacher": t, "kept": v["kept"], "rejected": v["rejected"], **{k: n for k, n in v["requests"].items()}}
        for t, v in report["teachers"].items()
    ]
    write_card(
        directory / "README.md",
        "captions.md.j2",
        metadata,
        command=report["command"],
        dataset=config.dataset,
        split=config.split,
        clip_seconds=config.clip_seconds,
        summary_seconds=config.summary_seconds,
        fps=config.fps,
        label_hint=config.label_hint,
        task=config.task,
        repo_id=str(config.output),
        has_rejected="rejected" in counts,
        teacher_table=markdown_table(teacher_rows),
        reasons_table=markdown_table([{"reason": r, "rows": n} for r, n in report["rejected_reasons"].items()]),
        schema_table=markdown_table([{"column": k, "type": _feature_type(v)} for k, v in features.items()]),
    )


def _reason_kind(reason: str) -> str:
    # "level 1 (0-10 s): empty: ..." -> "level 1: empty"; "label: label:mismatch" stays whole
    match = re.match(r"(level \d) \([^)]*\): ([^:]+)", reason)
    return f"{match.group(1)}: {match.group(2)}" if match else reason.split(":")[0]


def _with_video(row: dict[str, Any]) -> dict[str, Any]:
    video = row["video"]
    return {**row, "video": video() if callable(video) else video}


def write_captions(
    output: Path,
    split: str,
    kept: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    features: Features,
    config: CaptionConfig,
    report: dict[str, Any],
) -> Path:
    """Write the caption dataset (data/, rejected/, README.md, the report) into `output`, keeping the generations."""
    from vstar.io import split_file, write_parquet

    output.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for name, rows, row_features in (("default", kept, features), ("rejected", rejected, rejected_features(features))):
        path = output / split_file(split, name)
        path.unlink(missing_ok=True)
        if rows:  # `load_dataset` refuses an empty split file
            write_parquet(path, (_with_video(r) for r in rows), row_features)
            counts[name] = {split: len(rows)}
    for stale in ("data", "rejected"):
        if (output / stale).is_dir() and not any((output / stale).iterdir()):
            shutil.rmtree(output / stale)
    report["rejected_reasons"] = dict(Counter(_reason_kind(r["reason"]) for r in rejected))
    (output / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    if counts:
        _write_card(output, features, counts, report, config)
    return output


# --- the command -------------------------------------------------------------------------------------------------


def caption(
    config: CaptionConfig,
    settings: GenerationSettings | None = None,
    backends: Mapping[str, GenerationBackend] | None = None,
) -> Path:
    """Caption every clip of a source split with every teacher: the Python API of `vstar caption`.

    Args:
        config: what to caption and how (see `CaptionConfig`).
        settings: generation settings (backend, batch size, `max_new_tokens`, ...); defaults to
            `GenerationSettings()`.
        backends: already loaded teachers by `--teacher` value, built with `caption_settings(config, settings)`
            (default: each loaded in turn, once).

    Returns:
        The output directory: `load_dataset(output)` gives the captions, `load_dataset(output, "rejected")` the
        rows that could not be used, with the reason.

    ```python
    from vstar.synthesize import CaptionConfig, caption
    out = caption(CaptionConfig(dataset="data/clips", teacher=["Qwen/Qwen2.5-VL-7B-Instruct"], output="data/caps"))
    ```
    """
    from vstar.distributed import is_main_process
    from vstar.io import SourceRows, load_split
    from vstar.tasks.base import load_task

    settings = settings or GenerationSettings()
    backends = dict(backends or {})
    if not config.teacher:
        raise ConfigError("No teacher: give at least one --teacher MODEL (a directory, Hub id or served model name).")
    check_reference(config.dataset, "dataset", "source dataset")
    prompts = CaptionPrompts.load(config.prompts)
    dataset = load_split(config.dataset, config.split, revision=config.dataset_revision)
    missing = [c for c in ("id", "video") if c not in dataset.column_names]
    if missing:
        raise InputError(
            f"{config.dataset} (split {config.split!r}) has no column {', '.join(missing)} (its columns: "
            f"{', '.join(dataset.column_names)}): build it with `vstar build` or `vstar split`."
        )
    if config.limit is not None:
        dataset = dataset.select(range(min(config.limit, len(dataset))))
    task = load_task(config.task, config.task_options, features=dataset.features) if config.label_hint else None
    if task is not None and len(dataset):
        try:
            task.label(dataset[0])
        except KeyError as error:
            raise InputError(
                f"{config.dataset} (split {config.split!r}): {error.args[0]} Or caption without --label_hint."
            ) from None
    features = caption_features(dataset.features)
    rows = SourceRows(dataset).lazy_rows()
    output = Path(config.output)
    work = output / WORK_DIR
    report: dict[str, Any] = {
        "command": f"vstar caption --dataset {config.dataset} --split {config.split} "
        + " ".join(f"--teacher {t}" for t in config.teacher)
        + f" --output {config.output}",
        "dataset": config.dataset,
        "split": config.split,
        "clips": len(rows),
        "settings": asdict(config),
        "generation": {k: v for k, v in asdict(settings).items() if k != "api_key_env"},
        "teachers": {},
    }
    kept, rejected = [], []
    by_id = {row["id"]: row for row in rows}
    for teacher in config.teacher:
        backend_name, model = split_teacher(teacher, settings.backend)
        teacher_settings = replace(caption_settings(config, settings), backend=backend_name)
        started = time.perf_counter()
        loaded = teacher in backends
        backend = backends[teacher] if loaded else get_backend(teacher_settings, model)
        name = teacher_name(backend.model_name or model, backend_name, backend, teacher_settings)
        states, unusable = _states(rows, config, task)
        logger.info("Captioning %d clips with %s (%d cannot be captioned)", len(states), name, len(unusable))
        asked = caption_rounds(states, backend, teacher_settings, work, teacher_slug(teacher), prompts)
        if not loaded:
            backend.close()  # the next teacher gets the GPU memory back
        counts = Counter()
        for state in states:
            row = _row(by_id[state.id], features, name, state)
            reason, verdict = state.failure, None
            if reason is None and task is not None:
                verdict = task.verify(row["description"], task.label(by_id[state.id]))
                if not verdict.passed:
                    reason = f"label: the description does not state the label ({verdict.reason})"
            if reason is None:
                kept.append(row)
            else:
                rejected.append(
                    {
                        **row,
                        "reason": reason,
                        "verification": verdict.to_dict() if verdict else None,
                        "raw_outputs": state.raw,
                    }
                )
            counts["kept" if reason is None else "rejected"] += 1
        for clip_id, reason in unusable.items():
            row = _row(by_id[clip_id], features, name, None)
            rejected.append({**row, "reason": reason, "verification": None, "raw_outputs": []})
            counts["rejected"] += 1
        report["teachers"][name] = {
            "teacher": teacher,
            "backend": backend_name,
            "kept": counts["kept"],
            "rejected": counts["rejected"],
            "requests": asked,
            "seconds": round(time.perf_counter() - started, 2),
        }
    if not is_main_process():
        return output
    order = {clip_id: i for i, clip_id in enumerate(by_id)}
    kept.sort(key=lambda r: order[r["id"]])
    rejected.sort(key=lambda r: order[r["id"]])
    report["kept"], report["rejected"] = len(kept), len(rejected)
    write_captions(output, config.split, kept, rejected, features, config, report)
    logger.info("Wrote %d captions (%d rejected) to %s", len(kept), len(rejected), output)
    return output


def parse_caption_args(argv: Sequence[str]) -> tuple[CaptionConfig, GenerationSettings]:
    """The settings of a `vstar caption` command line; `--teacher A --teacher B` is `--teacher A B` (argparse would
    keep only the last), and a recipe's `teacher:` list is replaced by the flags when they are given.

    Args:
        argv: the arguments after `caption`.
    """
    teachers, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--teacher":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                teachers.append(argv[i])
                i += 1
            continue
        if arg.startswith("--teacher="):
            teachers.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return parse_configs((CaptionConfig, GenerationSettings), rest + (["--teacher", *teachers] if teachers else []))


def main(argv: list[str]) -> None:
    config, settings = parse_caption_args(argv)
    caption(config, settings)
