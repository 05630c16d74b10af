"""`vstar select`: score every teacher's caption of every clip with a video-text model and keep the best one.

Panda-70M's selection: a retrieval model scores each (clip, candidate caption) pair, the best caption per clip is
kept, and a low best score marks a clip to drop. The input is a caption dataset (`vstar caption`: one row per clip
and teacher, the caption in `description`); the output has one row per clip, the winning teacher's row with `score`
(its cosine with the clip) and `scores` (every teacher's), in the default config, and in the `rejected` config the
clips whose best score is below `min_score`, or that could not be scored, with the `reason`. Scoring runs through
`vstar.curate.executors` (`--executor local` or `--executor ray`); `--rescore false` re-thresholds an existing output
from its stored scores without loading the scorer.

```bash
vstar select --captions data/captions --scorer runs/scorer --output data/selected --min_score 0.2
vstar select --output data/selected --rescore false --min_score 0.3      # same scores, new threshold
vstar select --captions data/captions --scorer runs/scorer --output data/selected --executor ray --ray_address auto
```
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Features, Value
from tqdm.auto import tqdm

from vstar.configs import _check_range, check_reference, parse_configs
from vstar.errors import ConfigError, InputError
from vstar.io import configs_yaml, dataset_info_yaml, dataset_splits, load_split, split_file, write_parquet

logger = logging.getLogger(__name__)

SCORE_COLUMNS = {
    "score": Value("float64"),
    "scores": [{"teacher": Value("string"), "score": Value("float64")}],
    "reason": Value("string"),
}
REPORT_FILE = "select_report.json"


@dataclass
class SelectConfig:
    """`vstar select`: keep the best-scoring caption of each clip; clips below `min_score` go to `rejected`."""

    captions: str = field(
        default="", metadata={"help": "Caption dataset (folder or Hub id): one row per clip and teacher."}
    )
    captions_revision: str | None = field(default=None, metadata={"help": "Revision of the caption dataset."})
    scorer: str = field(default="", metadata={"help": "Video-text scorer: a CLIP, SigLIP or X-CLIP folder or Hub id."})
    output: str = field(default="data/selected", metadata={"help": "Output dataset folder (Hub layout)."})
    caption_column: str = field(default="description", metadata={"help": "Column holding each candidate caption."})
    teacher_column: str = field(default="teacher", metadata={"help": "Column naming each candidate's teacher."})
    min_score: float | None = field(
        default=None,
        metadata={"help": "Clips whose best score (cosine, in [-1, 1]) is below this go to `rejected`; unset: none."},
    )
    rescore: bool = field(
        default=True,
        metadata={"help": "Score the captions; `false` re-thresholds the scores already stored in --output."},
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per clip (default: the scorer's own)."})
    batch_size: int = field(default=16, metadata={"help": "Clips scored per batch (all their candidates at once)."})
    device: str | None = field(default=None, metadata={"help": "Where the scorer runs (default: CPU)."})
    executor: str = field(default="local", metadata={"help": "`local` (processes here) or `ray` (a Ray cluster)."})
    num_proc: int = field(default=1, metadata={"help": "local: worker processes, each with its own scorer."})
    ray_address: str | None = field(
        default=None, metadata={"help": "ray: the cluster (`auto`, `ray://head:10001`); unset starts a local one."}
    )
    ray_num_cpus: float = field(default=1.0, metadata={"help": "ray: CPUs per scoring actor."})
    ray_num_gpus: float = field(default=0.0, metadata={"help": "ray: GPUs per scoring actor."})
    ray_concurrency: int | None = field(default=None, metadata={"help": "ray: scoring actors (default: fit CPUs)."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads in each worker."})

    def __post_init__(self):
        _check_range(self, "min_score", -1, 1, optional=True)
        _check_range(self, "num_frames", 1, optional=True)
        _check_range(self, "batch_size", 1)
        _check_range(self, "num_proc", 1)
        _check_range(self, "torch_threads", 1, optional=True)
        from vstar.curate.executors import EXECUTORS

        EXECUTORS.get(self.executor)

    def executor_options(self) -> dict[str, Any]:
        if self.executor == "ray":
            return {
                "address": self.ray_address,
                "num_cpus": self.ray_num_cpus,
                "num_gpus": self.ray_num_gpus,
                "concurrency": self.ray_concurrency,
            }
        return {"num_proc": self.num_proc}


class CaptionScorer:
    """Scores a batch of clips against their candidate captions (built once per worker: it loads the scorer).

    Each input row is `{"id", "video", "start", "end", "captions": [text or None, ...]}`; each output row is
    `{"id", "scores": [cosine or None, ...], "error": str or None}`. A clip that cannot be decoded gets its error
    instead of scores, and the rest of the batch is scored.

    Args:
        scorer: the scorer's folder or Hub id.
        num_frames: frames per clip (None: the scorer's own).
        device: where it runs.
        torch_threads: torch.set_num_threads in this worker.
    """

    def __init__(
        self, scorer: str, num_frames: int | None = None, device: str | None = None, torch_threads: int | None = None
    ):
        import torch

        from vstar.scoring import VideoTextScorer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.scorer = VideoTextScorer.from_pretrained(scorer, num_frames=num_frames, device=device)

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from vstar.scoring import clip_frames
        from vstar.video import VideoDecodeError

        decoded, errors = {}, {}
        for i, row in enumerate(batch):
            try:
                decoded[i] = clip_frames(row["video"], row.get("start"), row.get("end"), self.scorer.num_frames)
            except VideoDecodeError as err:
                errors[i] = f"undecodable video: {err}"
        order = sorted(decoded)
        candidates = [[c for c in batch[i]["captions"] if c] for i in order]
        scored = dict(zip(order, self.scorer.score([decoded[i] for i in order], candidates), strict=True))
        out = []
        for i, row in enumerate(batch):
            if i in errors:
                out.append({"id": row["id"], "scores": None, "error": errors[i]})
                continue
            values = iter(scored[i])
            out.append(
                {"id": row["id"], "scores": [next(values) if c else None for c in row["captions"]], "error": None}
            )
        return out


def _clip_groups(dataset, config: SelectConfig) -> list[dict[str, Any]]:
    """The caption rows grouped by clip `id`, in order of first appearance; each group one scoring item."""
    missing = [c for c in ("id", "video", config.caption_column) if c not in dataset.column_names]
    if missing:
        raise InputError(
            f"{config.captions} has no column {', '.join(missing)} (columns: {', '.join(dataset.column_names)}): "
            "give the output of `vstar caption`, or name the caption column with --caption_column."
        )
    groups: dict[str, dict[str, Any]] = {}
    label_columns = [c for c in dataset.column_names if c != "video"]
    for position, row in enumerate(dataset.select_columns(label_columns)):
        clip_id = str(row["id"])
        group = groups.get(clip_id)
        if group is None:
            group = groups[clip_id] = {
                "id": clip_id,
                "position": position,  # of the clip's first row: its video is read when the clip is scored
                "start": row.get("start"),
                "end": row.get("end"),
                "rows": [],
            }
        elif (row.get("start"), row.get("end")) != (group["start"], group["end"]):
            raise InputError(
                f"{config.captions}: clip {clip_id!r} has rows with different windows ({group['start']}-"
                f"{group['end']} and {row.get('start')}-{row.get('end')}); clip ids must name one window."
            )
        group["rows"].append(row)
    return list(groups.values())


def _decide(scores: list[dict[str, Any]], min_score: float | None) -> tuple[int | None, str | None]:
    """The index of the best-scoring candidate and, when the clip is rejected, why."""
    valid = [(s["score"], i) for i, s in enumerate(scores) if s["score"] is not None]
    if not valid:
        return None, "no caption to score"
    best_score, best = max(valid, key=lambda v: (v[0], -v[1]))
    if min_score is not None and best_score < min_score:
        return best, f"best score {best_score:.4f} < min_score {min_score:g}"
    return best, None


def _score_split(dataset, config: SelectConfig, split: str) -> tuple[list[dict], list[dict]]:
    from vstar.curate.executors import get_executor

    groups = _clip_groups(dataset, config)
    videos = dataset.select_columns(["video"])
    # A generator: the local executor reads each clip's video (embedded bytes too) only when its batch is scored.
    items = (
        {
            "id": g["id"],
            "video": videos[g["position"]]["video"],
            "start": g["start"],
            "end": g["end"],
            "captions": [r.get(config.caption_column) or None for r in g["rows"]],
        }
        for g in groups
    )
    executor = get_executor(config.executor, **config.executor_options())
    results = executor.map_batches(
        CaptionScorer,
        items,
        batch_size=config.batch_size,
        fn_constructor_kwargs={
            "scorer": config.scorer,
            "num_frames": config.num_frames,
            "device": config.device,
            "torch_threads": config.torch_threads,
        },
    )
    kept, rejected = [], []
    progress = tqdm(zip(groups, results, strict=True), total=len(groups), desc=f"select {split}", leave=False)
    for group, result in progress:
        if result["id"] != group["id"]:
            raise RuntimeError(f"the executor returned clip {result['id']!r} in the place of {group['id']!r}")
        teachers = [str(r.get(config.teacher_column) or f"candidate-{i}") for i, r in enumerate(group["rows"])]
        values = result["scores"] or [None] * len(teachers)
        scores = [{"teacher": t, "score": v} for t, v in zip(teachers, values, strict=True)]
        if result["error"]:
            best, reason = None, result["error"]
        else:
            best, reason = _decide(scores, config.min_score)
        row = dict(group["rows"][best if best is not None else 0])
        row["video"] = videos[group["position"]]["video"]
        row.update(score=scores[best]["score"] if best is not None else None, scores=scores, reason=reason)
        (rejected if reason else kept).append(row)
    return kept, rejected


def _reason_kind(reason: str) -> str:
    return "below min_score" if reason.startswith("best score") else reason.split(":", 1)[0]


def _rethreshold(rows: list[dict[str, Any]], min_score: float | None) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for row in rows:
        reason = row.get("reason")
        if row.get("score") is not None and (reason is None or reason.startswith("best score")):
            _, reason = _decide([{"score": row["score"]}], min_score)
        (rejected if reason else kept).append({**row, "reason": reason})
    return kept, rejected


def _read_output(output: Path) -> tuple[dict[str, list[dict]], Features, dict[str, Any]]:
    """The rows of an earlier `vstar select` output (both configs, per split), its features and report."""
    report_path = output / REPORT_FILE
    if not report_path.is_file():
        raise InputError(
            f"--rescore false re-thresholds an earlier output, but {output} has no {REPORT_FILE}: run `vstar select` "
            "with --captions and --scorer first."
        )
    rows: dict[str, list[dict]] = {}
    features = None
    for config_name in ("default", "rejected"):
        for split in dataset_splits(output, config_name):
            dataset = load_split(output, split, config=config_name)
            features = features or dataset.features
            rows.setdefault(split, []).extend(dataset.to_list())
    if features is None:
        raise InputError(f"{output} holds no rows to re-threshold; run `vstar select` again with --rescore true.")
    return rows, features, json.loads(report_path.read_text())


def _write_output(
    output: Path,
    results: dict[str, tuple[list[dict], list[dict]]],
    features: Features,
    config: SelectConfig,
    report: dict[str, Any],
) -> None:
    tmp = output.with_name(output.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts: dict[str, dict[str, int]] = {"default": {}, "rejected": {}}
    for split, (kept, rejected) in results.items():
        for name, rows in (("default", kept), ("rejected", rejected)):
            if rows:  # `load_dataset` refuses an empty split file
                write_parquet(tmp / split_file(split, name), rows, features)
                counts[name][split] = len(rows)
    counts = {name: splits for name, splits in counts.items() if splits}
    if not counts:
        raise InputError(f"{config.captions or output} has no clips to select from.")
    report.update(
        min_score=config.min_score,
        clips={split: {"kept": len(k), "rejected": len(r)} for split, (k, r) in results.items()},
        rejected_reasons=dict(Counter(_reason_kind(r["reason"]) for _, rej in results.values() for r in rej)),
    )
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    _write_card(tmp, features, counts, results, config, report)
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)


def _write_card(directory: Path, features, counts, results, config: SelectConfig, report: dict[str, Any]) -> None:
    from vstar.cards import markdown_table, write_card
    from vstar.sources.base import _feature_type

    metadata = {
        "pretty_name": f"{directory.name.removesuffix('.partial')} (selected captions)",
        "license": report.get("license") or "other",
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "captions", "panda-70m"],
        "configs": configs_yaml({name: list(splits) for name, splits in counts.items()}),
        "dataset_info": dataset_info_yaml(directory, features, counts),
    }
    rows = [
        {"split": split, "kept": len(kept), "rejected": len(rejected)} for split, (kept, rejected) in results.items()
    ]
    teachers = Counter(row.get(config.teacher_column) for kept, _ in results.values() for row in kept)
    write_card(
        directory / "README.md",
        "selected_captions.md.j2",
        metadata,
        command=report["command"],
        captions=report["captions"],
        scorer=report["scorer"],
        scorer_kind=report.get("scorer_kind", "?"),
        num_frames=report.get("num_frames", "?"),
        min_score=config.min_score,
        output_name=directory.name.removesuffix(".partial"),
        repo_id=str(config.output),
        has_rejected="rejected" in counts,
        first_split=next(iter(counts.get("default") or counts["rejected"])),
        counts_table=markdown_table(rows),
        teacher_table=markdown_table([{"teacher": t, "clips": n} for t, n in teachers.most_common()]),
        schema_table=markdown_table([{"column": k, "type": _feature_type(v)} for k, v in features.items()]),
    )


def select_captions(config: SelectConfig) -> Path:
    """Score the candidate captions of every clip and write the selection (see the module docstring).

    Args:
        config: the settings.

    Returns:
        The output folder: `load_dataset(output)` gives the kept clips, `load_dataset(output, "rejected")` the rest.
    """
    output = Path(config.output)
    if not config.rescore:
        rows, features, report = _read_output(output)
        results = {split: _rethreshold(split_rows, config.min_score) for split, split_rows in rows.items()}
        report["command"] = f"vstar select --rescore false --output {output} --min_score {config.min_score}"
        _write_output(output, results, features, config, report)
        logger.info("Re-thresholded %s at min_score %s: %s", output, config.min_score, report["clips"])
        return output
    check_reference(config.captions, "captions", "caption dataset")
    check_reference(config.scorer, "scorer", "video-text scorer")
    if output.exists() and any(output.iterdir()) and not (output / REPORT_FILE).is_file():
        # The output folder is replaced as a whole: never one that holds something else.
        raise InputError(
            f"--output {output} exists and is not an earlier `vstar select` output (no {REPORT_FILE}); "
            "give a new or empty folder."
        )
    from vstar.scoring import SCORER_FILE

    splits = _caption_splits(config)
    results, features = {}, None
    for split in splits:
        dataset = load_split(config.captions, split, revision=config.captions_revision)
        features = features or Features({**dataset.features, **SCORE_COLUMNS})
        results[split] = _score_split(dataset, config, split)
    saved = Path(config.scorer) / SCORER_FILE
    scorer_settings = json.loads(saved.read_text()) if saved.is_file() else {}
    report = {
        "command": f"vstar select --captions {config.captions} --scorer {config.scorer} --output {output}",
        "captions": config.captions,
        "captions_revision": config.captions_revision,
        "scorer": config.scorer,
        "scorer_kind": _scorer_kind(config.scorer),
        "num_frames": config.num_frames or scorer_settings.get("num_frames"),
        "settings": asdict(config),
    }
    _write_output(output, results, features, config, report)
    logger.info("Selected captions into %s: %s", output, report["clips"])
    return output


def _caption_splits(config: SelectConfig) -> list[str]:
    path = Path(config.captions)
    if path.is_dir():
        splits = dataset_splits(path)
        if not splits:
            raise InputError(f"{path} has no Parquet splits under data/; give the output folder of `vstar caption`.")
        return splits
    from datasets import get_dataset_split_names

    return list(get_dataset_split_names(config.captions, revision=config.captions_revision))


def _scorer_kind(scorer: str) -> str:
    config_file = Path(scorer) / "config.json"
    if config_file.is_file():
        return str(json.loads(config_file.read_text()).get("model_type", "?"))
    return "?"


def main(argv: list[str]) -> None:
    (config,) = parse_configs((SelectConfig,), argv)
    if config.rescore and not config.scorer:
        raise ConfigError("scorer is not set: pass --scorer with a CLIP, SigLIP or X-CLIP folder or Hub id")
    select_captions(config)
