"""`vstar flywheel`: the caption flywheel (Video DataFlywheel's iterative refinement of annotations).

Per cycle k the current model (the base plus the adapter of cycle k-1; the starting model at k = 1) captions the
clips (`vstar caption`, that model the one teacher), a video-text scorer scores the captions and rejects those below
`min_score` (`vstar select`), the kept descriptions become an instruction dataset (the video and a fixed description
prompt, answered by the kept description), the model trains on it with the configured loss (`loss_type: ce | tailr
| adaptive_tailr`, optionally `sample_weighting: meta`), and cycle k+1 captions again with the new model. Every cycle
records the paper's trinity in `metrics.json` (plotted in `cycles.png`): quantity (annotations kept, share kept),
diversity (distinct words and word bigrams per 1k words of the kept captions) and quality (mean scorer score of the
kept; with a task, the share of kept descriptions its verifier passes against the clip's label).

```bash
vstar flywheel --config recipes/demo/config_flywheel_shapes_tiny.yaml --source_dataset data/shapes \
    --model_name_or_path runs/format-teacher --scorer runs/scorer --run_dir runs/flywheel
```

Run directory (each stage recorded in `state.json`; a rerun of the same command redoes no finished stage):
```
config.yaml  state.json  metrics.json  cycles.png
cycle-<k>/captions/   the model's captions (`vstar caption` output, its generations resumable)
cycle-<k>/selected/   scored captions: kept (default config) and below min_score (`rejected`)
cycle-<k>/dataset/    instruction dataset (configs `default` and `rejected`)
cycle-<k>/model/      the adapter (or full model) trained on it
```
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.configs import _check_range, check_reference, parse_configs
from vstar.cycle import ModelRef, RunState
from vstar.errors import ConfigError
from vstar.generate.base import GenerationSettings, get_backend
from vstar.rundir import RunLock, check_resume_settings
from vstar.synthesize.captions import CaptionConfig, caption, caption_settings
from vstar.train.sft import VStarSFTConfig, train

logger = logging.getLogger(__name__)

DEFAULT_DESCRIPTION_PROMPT = "Describe this video in detail."
_WORD = re.compile(r"[\w']+")


@dataclass
class FlywheelConfig:
    """`vstar flywheel`: caption, score and filter, train on what is kept, caption again, for `num_cycles`."""

    source_dataset: str = field(default="", metadata={"help": "Source dataset with the clips (folder or Hub id)."})
    source_revision: str | None = field(default=None, metadata={"help": "Source dataset revision."})
    source_split: str = field(default="train", metadata={"help": "Split whose clips are captioned every cycle."})
    limit: int | None = field(default=None, metadata={"help": "Caption only the first N clips of the split."})
    scorer: str = field(default="", metadata={"help": "Video-text scorer (CLIP, SigLIP or X-CLIP folder or Hub id)."})
    min_score: float | None = field(
        default=None, metadata={"help": "Captions whose score (cosine, in [-1, 1]) is below this are rejected."}
    )
    scorer_num_frames: int | None = field(default=None, metadata={"help": "Frames per clip for the scorer."})
    scorer_batch_size: int = field(default=16, metadata={"help": "Clips scored per batch."})
    num_cycles: int = field(default=2, metadata={"help": "Cycles of caption -> select -> train."})
    cycle_init: str = field(
        default="previous",
        metadata={"help": "`previous`: cycle k trains on from the model of cycle k-1; `base`: from the start model."},
    )
    description_prompt: str = field(
        default=DEFAULT_DESCRIPTION_PROMPT,
        metadata={"help": "The user turn (after the video) of every training example; the kept description answers."},
    )
    run_dir: str = field(default="runs/flywheel", metadata={"help": "Run directory (state, data, models)."})
    task: str | None = field(
        default=None, metadata={"help": "Task whose verifier checks the descriptions against the clips' labels."}
    )
    task_options: dict | str | None = field(default=None, metadata={"help": "Task options (mapping or JSON)."})
    label_hint: bool = field(
        default=False,
        metadata={"help": "Caption with the label as a hint and reject descriptions that miss it (needs --task)."},
    )
    clip_seconds: float = field(default=10.0, metadata={"help": "Caption: length of a level-1 window in seconds."})
    summary_seconds: float = field(default=30.0, metadata={"help": "Caption: a level-2 summary every N seconds."})
    caption_fps: float = field(default=1.0, metadata={"help": "Caption: frames per second shown at level 1."})
    caption_prompts: dict | str | None = field(
        default=None, metadata={"help": "Caption prompt overrides (level1, level2, level3, hint, hint_final)."}
    )
    generation_backend: str = field(default="transformers", metadata={"help": "transformers or vllm."})
    generation_batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest caption step in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "Caption sampling temperature (0: greedy)."})
    allow_config_change: bool = field(
        default=False, metadata={"help": "Resume a run whose saved settings differ in ways that change results."}
    )

    def __post_init__(self):
        from vstar.tasks.base import parse_task_options

        for name in ("task_options", "caption_prompts"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, parse_task_options(getattr(self, name)) or None)
        _check_range(self, "limit", 1, optional=True)
        _check_range(self, "num_cycles", 1)
        _check_range(self, "min_score", -1, 1, optional=True)
        _check_range(self, "scorer_batch_size", 1)
        if self.cycle_init not in ("previous", "base"):
            raise ConfigError(f"cycle_init must be `previous` or `base`, not {self.cycle_init!r}.")
        if not self.description_prompt.strip():
            raise ConfigError("description_prompt is empty: give the instruction the kept descriptions answer.")
        if self.label_hint and not self.task:
            raise ConfigError("label_hint needs the task whose labels it hints and verifies: add --task NAME.")

    def caption_config(self, output: Path) -> CaptionConfig:
        return CaptionConfig(
            dataset=self.source_dataset,
            dataset_revision=self.source_revision,
            split=self.source_split,
            teacher=["flywheel-model"],
            output=str(output),
            clip_seconds=self.clip_seconds,
            summary_seconds=self.summary_seconds,
            fps=self.caption_fps,
            label_hint=self.label_hint,
            task=self.task,
            task_options=self.task_options,
            prompts=self.caption_prompts,
            limit=self.limit,
        )

    def generation_settings(self, seed: int) -> GenerationSettings:
        return GenerationSettings(
            backend=self.generation_backend,
            batch_size=self.generation_batch_size,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=seed,
        )


# --- the trinity ---------------------------------------------------------------------------------------------------


def caption_words(text: str) -> list[str]:
    """The tokens diversity counts: lower-cased words (letters, digits, apostrophes), punctuation dropped."""
    return _WORD.findall(text.lower())


def trinity(
    descriptions: Sequence[str],
    scores: Sequence[float],
    clips: int,
    passed: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Quantity, diversity and quality of a cycle's kept captions (the definitions are in docs/noise.md).

    Args:
        descriptions: the kept descriptions.
        scores: their scorer scores.
        clips: the clips captioned (the denominator of the share kept).
        passed: per kept description, whether the task's verifier passed it (None: no task).
    """
    words = [caption_words(d) for d in descriptions]
    total = sum(len(w) for w in words)
    unigrams = {t for w in words for t in w}
    bigrams = {pair for w in words for pair in zip(w, w[1:])}
    per_1k = (lambda n: 1000.0 * n / total) if total else (lambda n: None)
    return {
        "quantity": {
            "kept": len(descriptions),
            "clips": clips,
            "share_kept": len(descriptions) / clips if clips else None,
        },
        "diversity": {
            "tokens": total,
            "distinct_tokens": len(unigrams),
            "distinct_bigrams": len(bigrams),
            "distinct_tokens_per_1k": per_1k(len(unigrams)),
            "distinct_bigrams_per_1k": per_1k(len(bigrams)),
        },
        "quality": {
            "mean_score": sum(scores) / len(scores) if scores else None,
            "verifier_pass_rate": (sum(passed) / len(passed) if passed else None) if passed is not None else None,
        },
    }


def plot_flywheel(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """`cycles.png` of a flywheel run: share kept, mean score, pass rate and distinct words / bigrams per word."""
    from vstar.plots import plot_cycles

    flat = []
    for entry in history:
        diversity = entry["diversity"]
        flat.append(
            {
                "cycle": entry["cycle"],
                "share_kept": entry["quantity"]["share_kept"],
                "mean_score": entry["quality"]["mean_score"],
                "verifier_pass_rate": entry["quality"]["verifier_pass_rate"],
                "distinct_tokens": _per_token(diversity["distinct_tokens_per_1k"]),
                "distinct_bigrams": _per_token(diversity["distinct_bigrams_per_1k"]),
            }
        )
    series = [
        ("share_kept", "quantity: share of clips kept", "o-"),
        ("distinct_tokens", "diversity: distinct words per word", "s--"),
        ("distinct_bigrams", "diversity: distinct bigrams per word", "d--"),
        ("mean_score", "quality: mean score of the kept", "^:"),
        ("verifier_pass_rate", "quality: verifier pass rate", "v:"),
    ]
    return plot_cycles(flat, path, series=series, title="Caption flywheel", ylim=(0, 1.02), legend_loc="upper right")


def _per_token(per_1k: float | None) -> float | None:
    return None if per_1k is None else per_1k / 1000.0


# --- the run -------------------------------------------------------------------------------------------------------


class FlywheelRunner:
    """Runs (or resumes) the caption flywheel of a `FlywheelConfig` and a training config.

    Args:
        config: the flywheel settings.
        train_config: the training settings; `model_name_or_path` is the base, `init_adapter` an optional starting
            adapter (the model of cycle 0).
    """

    def __init__(self, config: FlywheelConfig, train_config: VStarSFTConfig):
        self.config = config
        self.train_config = train_config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.run_dir / "state.json")
        self._task = None
        self._sources = None

    # -- inputs ---------------------------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        check_reference(self.config.source_dataset, "source_dataset", "source dataset")
        check_reference(self.config.scorer, "scorer", "video-text scorer")
        check_reference(self.train_config.model_name_or_path, "model_name_or_path", "model")
        if self.train_config.sample_weighting == "meta" and not self.train_config.meta_dataset:
            raise ConfigError("sample_weighting meta needs a clean meta set: pass --meta_dataset (a seed set).")

    @property
    def sources(self):
        if self._sources is None:
            from vstar.io import SourceRows, load_split

            dataset = load_split(
                self.config.source_dataset, self.config.source_split, revision=self.config.source_revision
            )
            self._sources = SourceRows(dataset)
        return self._sources

    @property
    def task(self):
        if self._task is None and self.config.task:
            from vstar.io import load_split
            from vstar.tasks.base import load_task

            features = load_split(
                self.config.source_dataset, self.config.source_split, revision=self.config.source_revision
            ).features
            self._task = load_task(self.config.task, self.config.task_options, features=features)
        return self._task

    def model_ref(self, cycle: int) -> ModelRef:
        """The model that results from `cycle` (0: the starting model)."""
        if cycle == 0:
            return ModelRef(self.train_config.model_name_or_path, self.train_config.init_adapter)
        model_dir = str(self.run_dir / f"cycle-{cycle}" / "model")
        if self.train_config.finetuning == "full":
            return ModelRef(model_dir)
        return ModelRef(self.train_config.model_name_or_path, model_dir)

    # -- stages ---------------------------------------------------------------------------------------------------
    def _caption(self, cycle: int) -> dict[str, Any]:
        stage = f"cycle-{cycle}/caption"
        if self.state.done(stage):
            return self.state.result(stage)
        output = self.run_dir / f"cycle-{cycle}" / "captions"
        ref = self.model_ref(cycle - 1)
        caption_config = self.config.caption_config(output)
        settings = caption_settings(caption_config, self.config.generation_settings(self.train_config.seed + cycle))
        logger.info("Cycle %d: %s captions the clips", cycle, ref)
        backend = get_backend(settings, ref.model, ref.adapter)
        try:
            caption(caption_config, settings, backends={caption_config.teacher[0]: backend})
        finally:
            backend.close()
        report = json.loads((output / "caption_report.json").read_text())
        result = {"clips": report["clips"], "captioned": report["kept"], "caption_rejected": report["rejected"]}
        self.state.mark(stage, result)
        return result

    def _select(self, cycle: int, captioned: int) -> dict[str, Any]:
        from vstar.curate.select import SelectConfig, select_captions

        stage = f"cycle-{cycle}/select"
        if self.state.done(stage):
            return self.state.result(stage)
        output = self.run_dir / f"cycle-{cycle}" / "selected"
        if captioned:
            select_captions(
                SelectConfig(
                    captions=str(self.run_dir / f"cycle-{cycle}" / "captions"),
                    scorer=self.config.scorer,
                    output=str(output),
                    min_score=self.config.min_score,
                    num_frames=self.config.scorer_num_frames,
                    batch_size=self.config.scorer_batch_size,
                    torch_threads=self.train_config.torch_threads,
                )
            )
            clips = json.loads((output / "select_report.json").read_text())["clips"][self.config.source_split]
        else:
            clips = {"kept": 0, "rejected": 0}
        result = {"kept": clips["kept"], "select_rejected": clips["rejected"]}
        self.state.mark(stage, result)
        return result

    def _dataset(self, cycle: int) -> dict[str, Any]:
        stage = f"cycle-{cycle}/dataset"
        if self.state.done(stage):
            return self.state.result(stage)
        result = write_flywheel_dataset(
            self.run_dir / f"cycle-{cycle}",
            cycle,
            self.config,
            self.task,
            self.sources,
            generator=_generator(self.model_ref(cycle - 1)),
        )
        self.state.mark(stage, result)
        return result

    def _train(self, cycle: int, noise_estimate: float | None) -> dict[str, Any]:
        from vstar.train.sft import read_train_summary, remove_dir

        stage = f"cycle-{cycle}/train"
        if self.state.done(stage):
            return self.state.result(stage)
        output = self.run_dir / f"cycle-{cycle}" / "model"
        partial = output.with_name(output.name + ".partial")
        start = self.model_ref(cycle - 1 if self.config.cycle_init == "previous" else 0)
        config = copy.deepcopy(self.train_config)
        config.output_dir = str(partial)
        config.dataset = str(self.run_dir / f"cycle-{cycle}" / "dataset")
        config.dataset_config, config.dataset_split = "default", self.config.source_split
        config.model_name_or_path, config.init_adapter = start.model, start.adapter
        config.resume_from_checkpoint = "last"
        if noise_estimate is not None:  # adaptive_tailr's gamma: the share of captions the scorer rejected
            config.tailr_noise_estimate = noise_estimate
        # A model finished before a kill (its summary is written last) is kept; anything else there restarts,
        # from its newest complete checkpoint when `save_strategy` wrote any.
        summary = read_train_summary(partial)
        if summary is None:
            summary = train(config)
        remove_dir(output)
        for checkpoint in partial.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        partial.rename(output)
        result = {
            "train_steps": summary["global_step"],
            "train_loss": summary["train_loss"],
            "train_rows": summary["num_rows"],
            "start": str(start),
        }
        self.state.mark(stage, result)
        return result

    # -- the loop -------------------------------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text())["cycles"] if path.exists() else []

    def _record(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        history = sorted(
            [c for c in self.history() if c["cycle"] != entry["cycle"]] + [entry], key=lambda c: c["cycle"]
        )
        path = self.run_dir / "metrics.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cycles": history}, indent=2))
        tmp.replace(path)
        plot_flywheel(history, self.run_dir / "cycles.png")
        return history

    def _guard_run_dir(self) -> None:
        from vstar.configs import config_dict, save_config

        check_resume_settings(
            self.run_dir / "config.yaml",
            config_dict(self.config, self.train_config),
            self.config.allow_config_change,
        )
        save_config(self.run_dir / "config.yaml", self.config, self.train_config)

    def run(self) -> list[dict[str, Any]]:
        """Run every unfinished stage of every cycle (holding the run directory's lock); returns the metrics."""
        with RunLock(self.run_dir):
            self.check_inputs()
            self._guard_run_dir()
            history = self.history()
            for cycle in range(1, self.config.num_cycles + 1):
                captioned = self._caption(cycle)
                selected = self._select(cycle, captioned["captioned"])
                counts = self._dataset(cycle)
                entry = {
                    "cycle": cycle,
                    "model": str(self.model_ref(cycle - 1)),
                    **counts["trinity"],
                    "captioned": captioned["captioned"],
                    "caption_rejected": captioned["caption_rejected"],
                    "select_rejected": selected["select_rejected"],
                }
                if not counts["kept"]:
                    history = self._record(entry)
                    logger.warning(
                        "Cycle %d kept no caption: %d of %d clips were captioned, %d of them scored below min_score "
                        "%s and %d could not be captioned; nothing to train on, so the flywheel stops. Lower "
                        "--min_score or look at %s (config `rejected`).",
                        cycle,
                        captioned["captioned"],
                        captioned["clips"],
                        selected["select_rejected"],
                        self.config.min_score,
                        captioned["caption_rejected"],
                        self.run_dir / f"cycle-{cycle}" / "dataset",
                    )
                    break
                share = counts["trinity"]["quantity"]["share_kept"]
                summary = self._train(cycle, None if share is None else 1.0 - share)
                entry.update(summary, trained_model=str(self.model_ref(cycle)))
                history = self._record(entry)
                logger.info(
                    "Cycle %d: kept %d of %d clips, %.0f distinct words per 1k, mean score %s",
                    cycle,
                    entry["quantity"]["kept"],
                    entry["quantity"]["clips"],
                    entry["diversity"]["distinct_tokens_per_1k"] or 0,
                    _fmt(entry["quality"]["mean_score"]),
                )
            return history


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _generator(ref: ModelRef) -> str:
    from vstar.lineage import generator_name

    try:
        return generator_name(ref.model, ref.adapter)
    except (FileNotFoundError, OSError):
        return str(ref)


def write_flywheel_dataset(
    cycle_dir: Path,
    cycle: int,
    config: FlywheelConfig,
    task,
    sources,
    generator: str,
) -> dict[str, Any]:
    """A cycle's instruction dataset from its selection: kept descriptions in `default`, the rest in `rejected`.

    Every row is the video and `config.description_prompt`, answered by the description; a rejected row's
    `verification.reason` says why (below min_score, or the caption step's reason). Returns the counts and the
    cycle's trinity (`trinity`) of the kept rows.

    Args:
        cycle_dir: the cycle's folder (reads `captions/` and `selected/`, writes `dataset/`).
        cycle: the cycle number.
        config: the flywheel settings.
        task: the task whose verifier checks each description against its clip's label (None: no check).
        sources: the source rows by id (`vstar.io.SourceRows`), for the labels.
        generator: the model that wrote the captions.
    """
    from vstar.cards import markdown_table, write_card
    from vstar.io import ParquetRowWriter, configs_yaml, dataset_info_yaml, split_file
    from vstar.schema import INSTRUCTION_FEATURES

    split = config.source_split
    selected, captions = cycle_dir / "selected", cycle_dir / "captions"
    kept_rows = _rows(selected, split, "default")
    rejected_rows = _rows(selected, split, "rejected") + [
        {**r, "score": None} for r in _rows(captions, split, "rejected")
    ]
    output = cycle_dir / "dataset"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    passed: list[bool] = []
    counts = {"default": 0, "rejected": 0}
    for name, rows in (("default", kept_rows), ("rejected", rejected_rows)):
        if not rows:  # `load_dataset` refuses an empty split file
            continue
        with ParquetRowWriter(output / split_file(split, name), INSTRUCTION_FEATURES) as writer:
            for row in rows:
                out = _instruction_row(row, cycle, config, task, sources, generator, kept=name == "default")
                if name == "default" and task is not None:
                    passed.append(out["verification"]["fields"][-1]["passed"])
                writer.write(out)
                counts[name] += 1
    stats = trinity(
        [r["description"] for r in kept_rows],
        [r["score"] for r in kept_rows],
        clips=len(kept_rows) + len(rejected_rows),
        passed=passed if task is not None else None,
    )
    present = {name: [split] for name in counts if counts[name]}
    reasons: dict[str, int] = {}
    for row in rejected_rows:
        kind = "below min_score" if str(row.get("reason", "")).startswith("best score") else str(row["reason"])
        kind = kind.split(":", 1)[0] if kind != "below min_score" else kind
        reasons[kind] = reasons.get(kind, 0) + 1
    metadata = {
        "pretty_name": f"caption flywheel cycle {cycle} instruction data",
        "license": "other",
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "captions", "video-dataflywheel", f"cycle-{cycle}"],
        "configs": configs_yaml(present) if present else [],
        "dataset_info": dataset_info_yaml(
            output, INSTRUCTION_FEATURES, {name: {split: n} for name, n in counts.items() if n}
        )
        if present
        else [],
    }
    write_card(
        output / "README.md",
        "flywheel_dataset.md.j2",
        metadata,
        cycle=cycle,
        generator=generator,
        scorer=config.scorer,
        min_score=config.min_score,
        prompt=config.description_prompt,
        has_rejected=bool(counts["rejected"]),
        split=split,
        trinity_table=markdown_table([_flat(stats)]),
        reasons_table=markdown_table([{"reason": k, "rows": n} for k, n in reasons.items()]),
    )
    return {"kept": counts["default"], "rejected": counts["rejected"], "trinity": stats}


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    return {f"{group}.{k}": v for group, values in stats.items() for k, v in values.items()}


def _rows(directory: Path, split: str, config_name: str) -> list[dict[str, Any]]:
    from vstar.io import dataset_splits, load_split

    if not directory.is_dir() or split not in dataset_splits(directory, config_name):
        return []
    return load_split(directory, split, config=config_name).to_list()


def _instruction_row(
    row: dict[str, Any], cycle: int, config: FlywheelConfig, task, sources, generator: str, kept: bool
) -> dict[str, Any]:
    from vstar.schema import conversation

    description = row.get("description") or ""
    score = row.get("score")
    threshold = "none" if config.min_score is None else f">= {config.min_score:g}"
    reason = row.get("reason") or f"score {score:.4f} (min_score {config.min_score})"
    fields = [
        {
            "name": "score",
            "passed": kept,
            "expected": threshold,
            "found": "" if score is None else f"{score:.4f}",
            "reason": "" if kept else reason,
            "detail": "",
        }
    ]
    label_text = None
    if task is not None:
        label = task.label(sources[row["id"]])
        label_text = task.label_text(label)
        verdict = task.verify(description, label)
        fields.append(
            {
                "name": "label",
                "passed": verdict.passed,
                "expected": label_text,
                "found": "",
                "reason": verdict.reason,
                "detail": "",
            }
        )
    return {
        "id": row["id"],
        "video": row["video"],
        "start": row.get("start"),
        "end": row.get("end"),
        "source": row.get("source"),
        "task": config.task or "caption",
        "label": label_text,
        "question": config.description_prompt,
        "answer": description,
        "messages": conversation(config.description_prompt, description),
        # A description written with the label as a hint is the caption form of a rationalized answer.
        "rationalized": config.label_hint,
        "cycle": cycle,
        "verification": {"passed": kept, "reason": "kept" if kept else reason, "fields": fields},
        "generator": generator,
    }


# --- the command ---------------------------------------------------------------------------------------------------


def run_flywheel(config: FlywheelConfig, train_config: VStarSFTConfig) -> list[dict[str, Any]]:
    """Run (or resume) the caption flywheel: the Python API of `vstar flywheel`.

    Args:
        config: the flywheel settings (clips, scorer, threshold, cycles, caption settings).
        train_config: the training settings (`model_name_or_path` is the starting model; `loss_type`,
            `sample_weighting` pick the robust loss).

    Returns:
        The per-cycle entries of `metrics.json` (`quantity`, `diversity`, `quality`, training results).

    ```python
    from vstar.flywheel import FlywheelConfig, run_flywheel
    from vstar.train.sft import VStarSFTConfig
    run_flywheel(FlywheelConfig(source_dataset="data/shapes", scorer="runs/scorer", min_score=0.2),
                 VStarSFTConfig(model_name_or_path="runs/teacher", output_dir="runs/flywheel/train"))
    ```
    """
    return FlywheelRunner(config, train_config).run()


def main(argv: list[str]) -> None:
    config, train_config = parse_configs((FlywheelConfig, VStarSFTConfig), argv)
    if not train_config.model_name_or_path:
        raise ConfigError("model_name_or_path is not set: give the starting model (a directory or Hub id).")
    if not config.scorer:
        raise ConfigError("scorer is not set: pass --scorer with a CLIP, SigLIP or X-CLIP folder or Hub id.")
    run_flywheel(config, train_config)


__all__ = ["FlywheelConfig", "FlywheelRunner", "caption_words", "plot_flywheel", "run_flywheel", "trinity"]
