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
from functools import partial
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
from vstar.generate.base import (
    GenerationBackend,
    GenerationRequest,
    build_requests,
    get_backend,
    read_generations,
    run_generation,
)
from vstar.io import SourceRows, load_split
from vstar.lineage import generator_name, publish_base_model
from vstar.plots import plot_cycles
from vstar.rundir import RunLock, check_resume_settings
from vstar.subsets import select_subset
from vstar.tasks.base import Task, load_task
from vstar.train.losses import cycle_noise_estimate
from vstar.train.sft import VStarSFTConfig, merge_adapter, seed_meta_dataset, train

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
        # The train split's features give the task its class vocabulary (a `ClassLabel` label column).
        self.task: Task = load_task(
            config.task, config.task_options, features=self._load_split(config.train_split).features
        )
        self.generation = config.generation_settings(
            train_config.num_frames, train_config.video_fps, train_config.seed
        )
        self.evaluation = config.evaluation_settings(self.generation)
        if train_config.sample_weighting == "meta" and not train_config.meta_dataset:
            train_config.meta_dataset = seed_meta_dataset(config.control_dataset)
        self._backend: tuple[str, GenerationBackend] | None = None
        self._sources: dict[str, dict[str, Any]] | None = None
        self._eval_rows: list[dict[str, Any]] | None = None

    # -- data ---------------------------------------------------------------------------------------------
    def _load_split(self, split: str):
        return load_split(self.config.source_dataset, split, revision=self.config.source_revision)

    def _subset(self, split: str, limit: int | None, offset: int = 0):
        """The rows of `split` the run uses: a seeded sample stratified by the label, recorded in the run dir."""
        return select_subset(
            self._load_split(split),
            limit,
            seed=self.train_config.seed,
            task=self.task,
            offset=offset,
            record=self.run_dir if is_main_process() else None,
            split=split,
        )

    @property
    def sources(self) -> SourceRows:
        """The train rows by id, read from Arrow on demand (no split-wide copy of the videos in any process)."""
        if self._sources is None:
            dataset = self._subset(self.config.train_split, self.config.source_limit, self.config.source_offset)
            self._sources = SourceRows(dataset)
        return self._sources

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        if self._eval_rows is None:
            if not self.config.eval_split:
                self._eval_rows = []
            else:
                dataset = self._subset(self.config.eval_split, self.config.eval_limit)
                self._eval_rows = SourceRows(dataset).lazy_rows()
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
            self.release_backend()
            self._backend = (key, get_backend(self.generation, ref.model, ref.adapter))
        return self._backend[1]

    def release_backend(self) -> None:
        """Shut the generation model (a vLLM engine included) down and hand its GPU memory back, before training."""
        if self._backend is not None:
            _, backend = self._backend
            self._backend = None
            backend.close()

    # -- stages -------------------------------------------------------------------------------------------
    def _requests(self, cycle: int, attempt: str, ids: list[str]) -> list[GenerationRequest]:
        rows = (self.sources.lazy_row(clip_id) for clip_id in ids)
        return build_requests(
            self.task,
            rows,
            attempt,
            seed=self.train_config.seed * 1000 + cycle,
            num_samples=self.config.num_samples_per_clip,
        )

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
                self.config.pass_settings(self.generation, attempt),
                description=f"cycle {cycle}: {'hinted retries' if attempt == 'rationalized' else 'direct answers'}",
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
        # Clips none of whose direct answers passed are retried with the hint.
        failed = broadcast_from_main(
            sorted({r["id"] for r in direct} - {r["id"] for r in direct if r["verification"]["passed"]})
            if direct is not None
            else None
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
                max_accepted_per_clip=self.config.max_accepted_per_clip,
            )
            write_instruction_card(
                dataset_dir, stats=stats, config=self.config, history=self.history(), train_config=self.train_config
            )
        stats = broadcast_from_main(stats)
        self.state.mark(stage, stats)
        return stats

    def _train(
        self,
        stage: str,
        dataset: str,
        output: Path,
        start: ModelRef,
        max_steps: int | None = None,
        noise_estimate: float | None = None,
    ):
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
        if noise_estimate is not None:  # adaptive_tailr's gamma (docs/noise.md)
            config.tailr_noise_estimate = noise_estimate
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
            self.release_backend()
            check_free_accelerator_memory(self.config.generation_backend)
            try:
                summary = train(config)
            except Exception as error:
                if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
                    raise training_memory_error(error, self.config.generation_backend) from error
                raise
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
            self.evaluation,
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

    def publish_best(self, cycle: int) -> None:
        """Point the `best` tag of both repos at cycle k's version (moved when a later cycle does better)."""
        from vstar.hub import cycle_tag, with_retries

        dataset_repo, model_repo = self.config.dataset_repo, self.config.model_repo
        if not (dataset_repo and model_repo) or not self.state.done(self.push_stage(cycle)):
            return
        stage = f"best/push:{dataset_repo}:{model_repo}"
        if self.state.done(stage) and self.state.result(stage).get("cycle") == cycle:
            return
        api = self._publisher().api
        for repo, repo_type in ((dataset_repo, "dataset"), (model_repo, "model")):
            refs = with_retries(partial(api.list_repo_refs, repo, repo_type=repo_type), f"list refs of {repo}")
            tags = {t.name: t.target_commit for t in refs.tags}
            target = tags.get(cycle_tag(cycle))
            if target is None:
                logger.warning("%s has no tag %s: the `best` tag is not moved.", repo, cycle_tag(cycle))
                return
            if tags.get("best") == target:
                continue
            if "best" in tags:
                with_retries(partial(api.delete_tag, repo, tag="best", repo_type=repo_type), f"move {repo}@best")
            create = partial(
                api.create_tag, repo, tag="best", revision=target, repo_type=repo_type, tag_message=cycle_tag(cycle)
            )
            with_retries(create, f"tag {repo}@best")
        self.state.mark(stage, {"cycle": cycle})

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

    @property
    def selection_metric(self) -> str:
        """What early stopping and the best cycle follow: a held-out metric, or `yield`."""
        return self.config.early_stop_metric or getattr(self.task, "primary_metric", "accuracy")

    def _selection_value(self, entry: dict[str, Any]) -> float | None:
        metric = self.selection_metric
        if metric == "yield":
            return entry.get("yield")
        value = (entry.get("heldout") or {}).get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    def best_cycle(self, history: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The trained cycle with the highest selection metric (the earliest on ties), or None."""
        scored = [(self._selection_value(c), -c["cycle"], c) for c in history if c["cycle"] > 0]
        scored = [s for s in scored if s[0] is not None]
        if not scored:
            return None
        value, _, entry = max(scored, key=lambda s: (s[0], s[1]))
        return {"cycle": entry["cycle"], "metric": self.selection_metric, "value": value}

    def _record(self, entry: dict[str, Any], final: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        history = [c for c in self.history() if c["cycle"] != entry["cycle"]] + [entry]
        history.sort(key=lambda c: c["cycle"])
        if is_main_process():
            path = self.run_dir / "metrics.json"
            previous = json.loads(path.read_text()) if path.exists() else {}
            payload = {"cycles": history, "best": self.best_cycle(history)}
            if final is not None or "final" in previous:
                payload["final"] = final if final is not None else previous["final"]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload, indent=2))
            tmp.replace(path)
            plot_cycles(history, self.run_dir / "cycles.png")
        wait_for_everyone()  # `history()` reads the file back on every process
        return history

    def _stop_early(self, history: list[dict[str, Any]]) -> bool:
        """No improvement of the selection metric by `early_stop_min_delta` in the last `patience` cycles.

        Cycle 0 (the starting model) counts as the first reference for held-out metrics; the yield starts at cycle 1.
        """
        patience = self.config.early_stop_patience
        entries = [c for c in history if c["cycle"] > 0 or self.selection_metric != "yield"]
        scores = [self._selection_value(c) for c in entries]
        if not patience or len(scores) <= patience or any(s is None for s in scores):
            return False
        best_before = max(scores[:-patience])
        return max(scores[-patience:]) < best_before + self.config.early_stop_min_delta

    def _entry(self, cycle: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "cycle": cycle,
            "model": str(self.model_ref(cycle)),
            "heldout_accuracy": metrics and metrics.get("accuracy"),
            "heldout_parse_rate": metrics and metrics.get("parse_rate"),
            "heldout": scalar_metrics(metrics),
        }

    def _guard_run_dir(self) -> None:
        """Refuse a resume whose settings changed what the run produces (unless allowed), then save the settings."""
        from vstar.configs import config_dict

        if is_main_process():
            check_resume_settings(
                self.run_dir / "config.yaml",
                config_dict(self.config, self.train_config),
                self.config.allow_config_change,
            )
            save_config(self.run_dir / "config.yaml", self.config, self.train_config)

    def run(self) -> list[dict[str, Any]]:
        """Run every unfinished stage of every cycle; returns the per-cycle metrics.

        The main process holds the run directory's lock for the whole run: a second `vstar cycle` on the same
        directory stops at once instead of writing into the same files.
        """
        lock = RunLock(self.run_dir)
        if is_main_process():
            lock.acquire()
        try:
            return self._run()
        finally:
            # The last evaluation's model (a vLLM engine under a launch included) is shut down while the launch's
            # process group is alive, not at interpreter exit.
            self.release_backend()
            lock.release()

    def _run(self) -> list[dict[str, Any]]:
        if self.config.resume_from_hub:
            if is_main_process():
                self.restore_from_hub()
            wait_for_everyone()
            self.state = RunState(self.run_dir / "state.json")
        self._guard_run_dir()
        wait_for_everyone()
        initial = self._evaluate(0, self.model_ref(0), self.run_dir / "cycle-0" / "eval", "cycle-0/evaluate")
        entry0 = self._entry(0, initial)
        entry0.update({"yield": None, "direct_yield": None, "control_heldout_accuracy": entry0["heldout_accuracy"]})
        history = self._record(entry0)
        for cycle in range(1, self.config.num_cycles + 1):
            stats = self._assemble(cycle)
            if not stats["accepted"]:
                logger.warning(
                    "Cycle %d accepted no answer for any of its %d clips (%d answers rejected): there is nothing to "
                    "train on. Check the task's prompts and verifier on cycle-%d/dataset (config `rejected`), or "
                    "start from a stronger model.",
                    cycle,
                    stats["generated"],
                    stats["rejected"],
                    cycle,
                )
                break
            start = self.model_ref(cycle - 1 if self.config.cycle_init == "previous" else 0)
            dataset_dir = self.run_dir / f"cycle-{cycle}" / "dataset"
            summary = self._train(
                f"cycle-{cycle}/train",
                str(dataset_dir),
                self.run_dir / f"cycle-{cycle}" / "model",
                start,
                noise_estimate=cycle_noise_estimate(stats),
            )
            metrics = self._evaluate(
                cycle, self.model_ref(cycle), self.run_dir / f"cycle-{cycle}" / "eval", f"cycle-{cycle}/evaluate"
            )
            control = self._control(cycle, summary["global_step"])
            entry = self._entry(cycle, metrics)
            entry.update(
                {
                    **{
                        k: stats.get(k)
                        for k in (
                            "generated",
                            "answers_direct",
                            "accepted_direct",
                            "accepted_rationalized",
                            "rejected",
                            "clips_with_accepted_answer",
                            "yield",
                            "direct_yield",
                        )
                    },
                    "rejected_by_reason": stats["rejected_by_reason"],
                    "train_steps": summary["global_step"],
                    "train_loss": summary["train_loss"],
                    "control_heldout_accuracy": control and control.get("accuracy"),
                }
            )
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
                logger.info(
                    "%s plateaued (patience %d): stopping after cycle %d.",
                    self.selection_metric,
                    self.config.early_stop_patience,
                    cycle,
                )
                break
        best = self.best_cycle(history)
        if best is not None:
            logger.info("Best cycle: %d (%s %.4f).", best["cycle"], best["metric"], best["value"])
            if is_main_process():
                self.publish_best(best["cycle"])
            wait_for_everyone()
        if self.config.final_retrain and best is not None:
            self._final_retrain(best["cycle"], history)
        return history

    # -- the final model ----------------------------------------------------------------------------------
    def _final_retrain(self, best: int, history: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Train from the base model on the best cycle's accepted answers without the rationalized ones."""
        final_dir = self.run_dir / "final"
        stage = "final/dataset"
        dataset_dir = final_dir / "dataset"
        if not self.state.done(stage):
            counts = None
            if is_main_process():
                counts = write_direct_only(self.run_dir / f"cycle-{best}" / "dataset", dataset_dir)
            counts = broadcast_from_main(counts)
            self.state.mark(stage, {"from_cycle": best, **counts})
        counts = self.state.result(stage)
        if not counts["rows"]:
            logger.warning("Cycle %d has no direct answers: no final model is trained.", best)
            return None
        noise = cycle_noise_estimate(self.state.data["stages"].get(f"cycle-{best}/assemble"))
        summary = self._train("final/train", str(dataset_dir), final_dir / "model", self.model_ref(0), None, noise)
        ref = self._trained_ref(final_dir / "model")
        metrics = self._evaluate(best, ref, final_dir / "eval", "final/evaluate")
        final = {
            "from_cycle": best,
            "train_rows": counts["rows"],
            "dropped_rationalized": counts["dropped_rationalized"],
            "train_steps": summary["global_step"],
            "model": str(ref),
            "heldout_accuracy": metrics and metrics.get("accuracy"),
            "heldout": scalar_metrics(metrics),
        }
        self._record(history[-1], final=final)
        logger.info("Final model (cycle %d data, direct answers only) -> %s", best, final_dir / "model")
        return final


def check_free_accelerator_memory(generation_backend: str, min_free_fraction: float = 0.5) -> None:
    """Before training: the GPU's memory is free again after generation, else say what holds it and what to set.

    Generation and training take turns on the same GPUs. A generation engine that still holds its memory (another
    process, or a vLLM engine that did not shut down) leaves training too little; the check names it before a
    training step fails halfway through a cycle.
    """
    import torch

    if not torch.cuda.is_available():
        return
    free, total = torch.cuda.mem_get_info()
    if free >= min_free_fraction * total:
        return
    used_here = torch.cuda.memory_reserved()
    message = (
        f"Only {free / 2**30:.1f} of {total / 2**30:.1f} GiB of GPU memory are free before training "
        f"({used_here / 2**30:.1f} GiB held by this process)."
    )
    if generation_backend == "vllm":
        message += " A vLLM engine still holds it: lower `vllm_gpu_memory_utilization`"
    else:
        message += " Another process holds it: stop it, or lower `per_device_train_batch_size`"
    logger.warning("%s; training may run out of memory.", message)


def training_memory_error(error: BaseException, generation_backend: str) -> Exception:
    """A clear error for a training step that ran out of GPU memory: what to set."""
    from vstar.errors import VStarError

    settings = "`per_device_train_batch_size` (raise `gradient_accumulation_steps` to keep the batch), `num_frames`"
    if generation_backend == "vllm":
        settings += ", `vllm_gpu_memory_utilization`"
    return VStarError(
        f"Training ran out of GPU memory ({str(error).splitlines()[0]}). Lower {settings}, or keep "
        "`activation_checkpointing: true`."
    )


def scalar_metrics(metrics: dict[str, Any] | None) -> dict[str, float] | None:
    """The numeric metrics of an evaluation (per-class tables and confusions left in results.json)."""
    if not metrics:
        return None
    return {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None
    }


def write_direct_only(dataset_dir: Path, output_dir: Path) -> dict[str, int]:
    """A copy of an instruction dataset without its rationalized rows (Hub layout, `default` config only)."""
    from vstar.io import ParquetRowWriter, split_file
    from vstar.schema import INSTRUCTION_FEATURES

    rows = load_split(dataset_dir, "train")
    kept = dropped = 0
    shutil.rmtree(output_dir, ignore_errors=True)
    with ParquetRowWriter(output_dir / split_file("train"), INSTRUCTION_FEATURES) as writer:
        for index in range(len(rows)):
            row = rows[index]
            if row["rationalized"]:
                dropped += 1
                continue
            writer.write(row)
            kept += 1
    return {"rows": kept, "dropped_rationalized": dropped}
