"""The Video-STaR loop: generate -> verify -> rationalize -> assemble -> train -> evaluate, for K cycles.

Everything lives in a run directory with a state file; each stage records its completion there and writes its
output atomically, so a run killed at any point resumes with the same command without redoing finished stages
and without losing or duplicating rows.

```bash
vstar cycle --config recipes/demo/config_shapes_tiny.yaml --run_dir runs/shapes
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m vstar.cli cycle --config ...
```

Under `accelerate launch` / `torchrun` every process generates its share of each pass and trains as one DDP /
DeepSpeed / FSDP job; the main process alone verifies, assembles, writes the run directory and pushes, and the
others wait for it at a barrier.

Run directory:
```
config.yaml  state.json  metrics.json  cycles.png
cycle-0/eval/                 the starting model on the held-out split
cycle-<k>/generations/        direct-*.parquet, rationalized-*.parquet (resumable chunks)
cycle-<k>/dataset/            instruction dataset (Hub layout: configs `default` and `rejected`, README.md)
cycle-<k>/model/              LoRA adapter + processor + README.md
cycle-<k>/eval/               held-out answers and results.json
cycle-<k>/control/            (optional) the control model and its evaluation
```
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vstar.assemble import assemble_cycle, verify_generations
from vstar.cards import write_instruction_card, write_model_card
from vstar.configs import CycleConfig, save_config
from vstar.distributed import (
    DEFAULT_TIMEOUT_SECONDS,
    broadcast_from_main,
    init_distributed,
    is_main_process,
    wait_for_everyone,
)
from vstar.evaluate.run import evaluate_model
from vstar.generate.base import GenerationBackend, GenerationRequest, get_backend, read_generations, run_generation
from vstar.io import load_split, rows_with_class_names
from vstar.lineage import generator_name, publish_base_model
from vstar.plots import plot_cycles
from vstar.tasks.base import Task, draw_questions, get_task
from vstar.train.sft import VStarSFTConfig, merge_adapter, train

logger = logging.getLogger(__name__)


class RunState:
    """The run's progress: finished stages with their results, saved atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def result(self, stage: str) -> Any:
        return self.data["stages"][stage]

    def mark(self, stage: str, result: Any = True) -> None:
        self.data["stages"][stage] = result
        if not is_main_process():
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


@dataclass
class ModelRef:
    """A model version: base weights plus an optional adapter."""

    model: str
    adapter: str | None = None

    def __str__(self) -> str:
        return self.model + (f" + {self.adapter}" if self.adapter else "")


class CycleRunner:
    """Runs (or resumes) the loop described by a `CycleConfig` and a training config.

    Args:
        config: the loop settings.
        train_config: the training settings; `model_name_or_path` is the base model, `init_adapter` an optional
            starting adapter (cycle 0's model).
    """

    def __init__(self, config: CycleConfig, train_config: VStarSFTConfig):
        self.config = config
        self.train_config = train_config
        self.run_dir = Path(config.run_dir)
        # Processes wait for the main one while it verifies and assembles: never less than vstar's long default.
        init_distributed(max(train_config.ddp_timeout, DEFAULT_TIMEOUT_SECONDS))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.run_dir / "state.json")
        wait_for_everyone()  # every process has read the state before the main process changes it
        self.task: Task = get_task(config.task, **(config.task_options or {}))
        self.generation = config.generation_settings(
            train_config.num_frames, train_config.video_fps, train_config.seed
        )
        self._backend: tuple[str, GenerationBackend] | None = None
        self._sources: dict[str, dict[str, Any]] | None = None
        self._eval_rows: list[dict[str, Any]] | None = None

    # -- data ---------------------------------------------------------------------------------------------
    def _load_split(self, split: str):
        return load_split(self.config.source_dataset, split, revision=self.config.source_revision)

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        if self._sources is None:
            dataset = self._load_split(self.config.train_split)
            end = (
                len(dataset)
                if self.config.source_limit is None
                else self.config.source_offset + self.config.source_limit
            )
            dataset = dataset.select(range(self.config.source_offset, min(end, len(dataset))))
            rows = rows_with_class_names(dataset)
            self._sources = {r["id"]: r for r in rows}
        return self._sources

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        if self._eval_rows is None:
            if not self.config.eval_split:
                self._eval_rows = []
            else:
                dataset = self._load_split(self.config.eval_split)
                if self.config.eval_limit is not None:
                    dataset = dataset.select(range(min(self.config.eval_limit, len(dataset))))
                self._eval_rows = rows_with_class_names(dataset)
        return self._eval_rows

    # -- models -------------------------------------------------------------------------------------------
    def model_ref(self, cycle: int) -> ModelRef:
        """The model that results from `cycle` (0: the starting model)."""
        if cycle == 0:
            return ModelRef(self.train_config.model_name_or_path, self.train_config.init_adapter)
        return self._trained_ref(self.run_dir / f"cycle-{cycle}" / "model")

    def _trained_ref(self, model_dir: Path) -> ModelRef:
        if self.train_config.finetuning == "full":
            return ModelRef(str(model_dir))
        return ModelRef(self.train_config.model_name_or_path, str(model_dir))

    def backend(self, ref: ModelRef) -> GenerationBackend:
        """One loaded model at a time: the model of cycle k evaluates and then generates for cycle k+1."""
        key = str(ref)
        if self._backend is None or self._backend[0] != key:
            self._backend = None
            self._backend = (key, get_backend(self.generation, ref.model, ref.adapter))
        return self._backend[1]

    # -- stages -------------------------------------------------------------------------------------------
    def _requests(self, cycle: int, attempt: str, ids: list[str]) -> list[GenerationRequest]:
        questions = draw_questions(self.task, ids, seed=self.train_config.seed * 1000 + cycle)
        requests = []
        for clip_id, question in zip(ids, questions):
            row = self.sources[clip_id]
            if attempt == "direct":
                prompt = self.task.direct_prompt(question)
            else:
                prompt = self.task.rationalization_prompt(question, self.task.label(row))
            requests.append(
                GenerationRequest(clip_id, attempt, question, prompt, row["video"], row.get("start"), row.get("end"))
            )
        return requests

    def _generate(self, cycle: int, attempt: str, ids: list[str]) -> list[dict[str, Any]] | None:
        """Every process answers its share; the main process gets the verified answers, the others `None`."""
        stage = f"cycle-{cycle}/generate_{attempt}"
        out_dir = self.run_dir / f"cycle-{cycle}" / "generations"
        if not self.state.done(stage):
            run_generation(
                self._requests(cycle, attempt, ids),
                self.backend(self.model_ref(cycle - 1)),
                out_dir,
                attempt,
                self.generation,
            )
            self.state.mark(stage, {"requests": len(ids)})
        if not is_main_process():
            return None
        return verify_generations(read_generations(out_dir, attempt), self.sources, self.task)

    def _assemble(self, cycle: int) -> dict[str, Any]:
        stage = f"cycle-{cycle}/assemble"
        if self.state.done(stage):
            return self.state.result(stage)
        direct = self._generate(cycle, "direct", sorted(self.sources))
        failed = broadcast_from_main(
            sorted(r["id"] for r in direct if not r["verification"]["passed"]) if direct is not None else None
        )
        rationalized = self._generate(cycle, "rationalized", failed) if self.config.rationalize and failed else []
        stats = None
        if is_main_process():
            dataset_dir = self.run_dir / f"cycle-{cycle}" / "dataset"
            shutil.rmtree(dataset_dir, ignore_errors=True)
            ref = self.model_ref(cycle - 1)
            stats = assemble_cycle(
                self.sources,
                direct,
                rationalized,
                self.task,
                cycle,
                dataset_dir,
                generator=generator_name(ref.model, ref.adapter),
            )
            write_instruction_card(
                dataset_dir, stats=stats, config=self.config, history=self.history(), train_config=self.train_config
            )
        stats = broadcast_from_main(stats)
        self.state.mark(stage, stats)
        return stats

    def _train(self, stage: str, dataset: str, output: Path, start: ModelRef, max_steps: int | None = None):
        from vstar.train.sft import (
            latest_checkpoint,
            read_train_summary,
            remove_dir,
            remove_incomplete_checkpoints,
            training_identity,
        )

        if self.state.done(stage):
            return self.state.result(stage)
        partial = output.with_name(output.name + ".partial")
        config = copy.deepcopy(self.train_config)
        config.output_dir = str(partial)
        config.dataset, config.dataset_config, config.dataset_split = dataset, "default", "train"
        config.model_name_or_path, config.init_adapter = start.model, start.adapter
        config.resume_from_checkpoint = "last"
        if max_steps is not None:
            config.max_steps = max_steps
        identity = json.loads(json.dumps(training_identity(config)))

        def ours(summary: dict[str, Any] | None) -> bool:
            return summary is not None and summary.get("trained", identity) == identity

        # A kill can land anywhere below; what it leaves is repaired here, so the same command always completes:
        # - the partial directory holds the finished model (`train_summary.json` is written last): only the
        #   cleanup and the rename are left;
        # - the model directory holds it and the partial directory is gone: only the state mark is left;
        # - the partial directory holds complete checkpoints (`save_strategy: steps`): training continues from
        #   the newest; incomplete ones (killed while written or deleted) are removed;
        # - anything else in the partial directory is unfinished work of unknown state.
        finished = None
        if is_main_process():
            if ours(read_train_summary(partial)):
                finished = read_train_summary(partial)
            elif not partial.exists() and ours(read_train_summary(output)):
                finished = read_train_summary(output)
            elif read_train_summary(partial) is not None:
                remove_dir(partial)  # another training's finished model
            else:
                remove_incomplete_checkpoints(partial, config.save_only_model)
                if latest_checkpoint(partial, "last", config.save_only_model) is None:
                    remove_dir(partial)
            if finished is not None:
                logger.info("%s finished training before the run stopped; completing it.", partial.name)
        summary = broadcast_from_main(finished)
        if summary is None:
            self._backend = None  # free the generation model's memory while training
            summary = train(config)
        if is_main_process() and partial.exists():
            # Checkpoints are only for resuming; the model is the final weights. Each removal is a rename first,
            # so a kill leaves every checkpoint whole or hidden, never half deleted under its name.
            for checkpoint in partial.glob("checkpoint-*"):
                remove_dir(checkpoint)
            for leftover in partial.glob(".removing-*"):
                shutil.rmtree(leftover)
            remove_dir(output)
            partial.rename(output)
        wait_for_everyone()
        summary = {**summary, "output_dir": str(output)}
        self.state.mark(stage, summary)
        return summary

    def _evaluate(self, cycle: int, ref: ModelRef, out_dir: Path, stage: str) -> dict[str, Any] | None:
        if not self.eval_rows:
            return None
        if self.state.done(stage):
            return self.state.result(stage)
        results = evaluate_model(
            self.backend(ref),
            self.eval_rows,
            self.task,
            out_dir,
            self.generation,
            description={
                "model": ref.model,
                "adapter": ref.adapter,
                "dataset": self.config.source_dataset,
                "split": self.config.eval_split,
            },
        )
        self.state.mark(stage, results["metrics"])
        return results["metrics"]

    def _control(self, cycle: int, steps: int) -> dict[str, Any] | None:
        if not self.config.control_dataset:
            return None
        control_dir = self.run_dir / f"cycle-{cycle}" / "control"
        # The control always continues from the previous control, as the cycles' models do in the demo.
        previous = self.run_dir / f"cycle-{cycle - 1}" / "control" / "model"
        start = self._trained_ref(previous) if cycle > 1 else self.model_ref(0)
        self._train(
            f"cycle-{cycle}/train_control", self.config.control_dataset, control_dir / "model", start, max_steps=steps
        )
        ref = self._trained_ref(control_dir / "model")
        return self._evaluate(cycle, ref, control_dir / "eval", f"cycle-{cycle}/evaluate_control")

    # -- the Hub ------------------------------------------------------------------------------------------
    def _publisher(self):
        from vstar.hub import HubPublisher

        return HubPublisher(
            token=self.train_config.hub_token, private=self.config.hub_private, embed_videos=self.config.embed_videos
        )

    def push_stage(self, cycle: int) -> str:
        """The state key of a cycle's push to the configured repos (another pair of repos is another push)."""
        return f"cycle-{cycle}/push:{self.config.dataset_repo}:{self.config.model_repo}"

    def publish(self, cycle: int, entry: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Push cycle k's dataset and adapter (with the run's state, for `resume_from_hub`), then tag them."""
        from vstar.hub import cycle_tag, push_cycle

        dataset_repo, model_repo = self.config.dataset_repo, self.config.model_repo
        stage = self.push_stage(cycle)
        if not (dataset_repo and model_repo) or self.state.done(stage):
            return
        cycle_dir = self.run_dir / f"cycle-{cycle}"
        stats = self.state.result(f"cycle-{cycle}/assemble")
        write_instruction_card(
            cycle_dir / "dataset",
            stats=stats,
            config=self.config,
            history=history,
            repo_id=dataset_repo,
            revision=cycle_tag(cycle),
            train_config=self.train_config,
        )
        run_files = cycle_dir / "model" / "vstar_run"
        run_files.mkdir(exist_ok=True)
        for name in ("metrics.json", "state.json", "config.yaml"):
            shutil.copyfile(self.run_dir / name, run_files / name)
        shutil.copyfile(self.run_dir / "cycles.png", cycle_dir / "model" / "cycles.png")

        def card_for(dataset_repo: str, dataset_sha: str) -> None:
            # The card's snippet loads the base from the Hub: a local base directory is pushed beside the model.
            base_repo = publish_base_model(
                self._publisher(), self.train_config.model_name_or_path, model_repo, self.config.hub_base_model_repo
            )
            write_model_card(
                cycle_dir / "model",
                entry=entry,
                history=history,
                cycle_config=self.config,
                train_config=self.train_config,
                dataset_dir=cycle_dir / "dataset",
                repo_id=model_repo,
                revision=cycle_tag(cycle),
                dataset_repo=dataset_repo,
                dataset_revision=dataset_sha,
                base_repo=base_repo,
            )

        merged = cycle_dir / "model" / "merged"
        if self.config.push_merged and self.train_config.finetuning == "lora" and not merged.exists():
            merge_adapter(self.train_config.model_name_or_path, cycle_dir / "model", merged)
        self.state.mark(stage, push_cycle(self._publisher(), self.run_dir, cycle, dataset_repo, model_repo, card_for))

    def restore_from_hub(self) -> int:
        """Bring the latest tagged cycle of the model repo (adapter + run state) into the run directory.

        Returns the restored cycle number (0 when the repo has no cycle yet).
        """
        from vstar.hub import cycle_tag

        publisher = self._publisher()
        repo = self.config.model_repo
        if not repo:
            raise ValueError("resume_from_hub needs hub_repo or hub_model_repo.")
        refs = publisher.api.list_repo_refs(repo, repo_type="model")
        cycles = sorted(int(t.name.split("-")[1]) for t in refs.tags if re.fullmatch(r"cycle-\d+", t.name))
        if not cycles:
            logger.info("%s has no cycle tag yet: starting from cycle 1.", repo)
            return 0
        latest = cycles[-1]
        if self.state.done(self.push_stage(latest)):
            return latest
        model_dir = self.run_dir / f"cycle-{latest}" / "model"
        publisher.download_model(repo, cycle_tag(latest), model_dir)
        for name in ("metrics.json", "state.json"):
            remote = model_dir / "vstar_run" / name
            if remote.exists():
                shutil.copyfile(remote, self.run_dir / name)
        self.state = RunState(self.run_dir / "state.json")
        for cycle in cycles:
            # Those versions are on the Hub already; their local data and models need not exist here.
            if not self.state.done(self.push_stage(cycle)):
                self.state.mark(self.push_stage(cycle), {"restored_from": f"{repo}@{cycle_tag(cycle)}"})
        logger.info("Resumed from %s@%s.", repo, cycle_tag(latest))
        return latest

    # -- the loop -----------------------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text())["cycles"] if path.exists() else []

    def _record(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        history = [c for c in self.history() if c["cycle"] != entry["cycle"]] + [entry]
        history.sort(key=lambda c: c["cycle"])
        if is_main_process():
            (self.run_dir / "metrics.json").write_text(json.dumps({"cycles": history}, indent=2))
            plot_cycles(history, self.run_dir / "cycles.png")
        wait_for_everyone()  # `history()` reads the file back on every process
        return history

    def _stop_early(self, history: list[dict[str, Any]]) -> bool:
        patience = self.config.early_stop_patience
        scores = [c.get("heldout_accuracy") for c in history]
        if not patience or len(scores) <= patience or any(s is None for s in scores):
            return False
        best_before = max(scores[:-patience])
        return max(scores[-patience:]) < best_before + self.config.early_stop_min_delta

    def run(self) -> list[dict[str, Any]]:
        """Run every unfinished stage of every cycle; returns the per-cycle metrics."""
        if self.config.resume_from_hub:
            if is_main_process():
                self.restore_from_hub()
            wait_for_everyone()
            self.state = RunState(self.run_dir / "state.json")
        if is_main_process():
            save_config(self.run_dir / "config.yaml", self.config, self.train_config)
        initial = self._evaluate(0, self.model_ref(0), self.run_dir / "cycle-0" / "eval", "cycle-0/evaluate")
        history = self._record(
            {
                "cycle": 0,
                "model": str(self.model_ref(0)),
                "yield": None,
                "heldout_accuracy": initial and initial["accuracy"],
                "control_heldout_accuracy": initial and initial["accuracy"],
            }
        )
        for cycle in range(1, self.config.num_cycles + 1):
            stats = self._assemble(cycle)
            if not stats["accepted"]:
                logger.warning(
                    "Cycle %d accepted none of %d answers: there is nothing to train on. Check the task's prompts and "
                    "verifier on cycle-%d/dataset (config `rejected`), or start from a stronger model.",
                    cycle,
                    stats["generated"],
                    cycle,
                )
                break
            start = self.model_ref(cycle - 1 if self.config.cycle_init == "previous" else 0)
            dataset_dir = self.run_dir / f"cycle-{cycle}" / "dataset"
            summary = self._train(
                f"cycle-{cycle}/train", str(dataset_dir), self.run_dir / f"cycle-{cycle}" / "model", start
            )
            metrics = self._evaluate(
                cycle, self.model_ref(cycle), self.run_dir / f"cycle-{cycle}" / "eval", f"cycle-{cycle}/evaluate"
            )
            control = self._control(cycle, summary["global_step"])
            entry = {
                "cycle": cycle,
                "model": str(self.model_ref(cycle)),
                **{
                    k: stats[k] for k in ("generated", "accepted_direct", "accepted_rationalized", "rejected", "yield")
                },
                "rejected_by_reason": stats["rejected_by_reason"],
                "train_steps": summary["global_step"],
                "train_loss": summary["train_loss"],
                "heldout_accuracy": metrics and metrics["accuracy"],
                "heldout_parse_rate": metrics and metrics["parse_rate"],
                "control_heldout_accuracy": control and control["accuracy"],
            }
            history = self._record(entry)
            if is_main_process() and (self.run_dir / f"cycle-{cycle}" / "model").exists():
                write_model_card(
                    self.run_dir / f"cycle-{cycle}" / "model",
                    entry=entry,
                    history=history,
                    cycle_config=self.config,
                    train_config=self.train_config,
                    dataset_dir=dataset_dir,
                )
            if is_main_process():
                self.publish(cycle, entry, history)
            wait_for_everyone()
            if self._stop_early(history):
                logger.info("Held-out accuracy plateaued; stopping after cycle %d.", cycle)
                break
        return history
