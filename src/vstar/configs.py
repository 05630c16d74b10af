"""Typed settings of the loop, parsed with `TrlParser` from a recipe YAML plus command-line overrides.

A recipe is one flat YAML file holding the fields of `CycleConfig` (the loop) and `VStarSFTConfig` (training,
which extends `trl.SFTConfig`); `vstar cycle --config recipe.yaml --num_cycles 2` overrides any field.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from vstar.generate.base import GenerationSettings


@dataclass
class CycleConfig:
    """Settings of the Video-STaR loop (generate -> verify -> rationalize -> assemble -> train -> evaluate)."""

    source_dataset: str = field(default="", metadata={"help": "Source dataset: a directory or a Hub repo id."})
    source_revision: str | None = field(default=None, metadata={"help": "Source dataset revision."})
    train_split: str = field(default="train", metadata={"help": "Split the loop generates on."})
    eval_split: str | None = field(default="test", metadata={"help": "Held-out split; never trained on."})
    source_offset: int = field(default=0, metadata={"help": "Skip this many rows of the train split."})
    source_limit: int | None = field(default=None, metadata={"help": "Use at most this many train rows."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on at most this many rows."})
    task: str = field(default="action_recognition", metadata={"help": "Task name (see `vstar.tasks`)."})
    task_options: dict | str | None = field(
        default=None, metadata={"help": "Task options as a mapping (YAML) or JSON string, e.g. prompts."}
    )
    run_dir: str = field(default="runs/vstar", metadata={"help": "Run directory (state, data, models)."})
    num_cycles: int = field(default=3, metadata={"help": "Maximum number of cycles."})
    cycle_init: str = field(
        default="base",
        metadata={"help": "`base`: each cycle trains from the base model (the paper); `previous`: continue."},
    )
    rationalize: bool = field(default=True, metadata={"help": "Retry failures with the label as a hint."})
    early_stop_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many cycles without held-out improvement."}
    )
    early_stop_min_delta: float = field(default=0.0, metadata={"help": "Smallest improvement that counts."})
    control_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Instruction dataset of a control: each cycle also trains a model on it alone for the same "
            "number of steps (continuing from the previous control) and evaluates it."
        },
    )
    hub_repo: str | None = field(
        default=None,
        metadata={"help": "Push every cycle to ORG/NAME (dataset repo and model repo); `--push-to-hub` sets it."},
    )
    hub_dataset_repo: str | None = field(default=None, metadata={"help": "Dataset repo (default: hub_repo)."})
    hub_model_repo: str | None = field(default=None, metadata={"help": "Model repo (default: hub_repo)."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    embed_videos: bool = field(
        default=True, metadata={"help": "Embed video bytes in pushed datasets (else only the paths are pushed)."}
    )
    push_merged: bool = field(
        default=False,
        metadata={"help": "Also push the adapter merged into the base weights, to `<model repo>-merged`."},
    )
    resume_from_hub: bool = field(
        default=False, metadata={"help": "Continue a run whose latest cycle lives on the Hub (hub_model_repo)."}
    )
    generation_backend: str = field(default="transformers", metadata={"help": "transformers or vllm."})
    generation_batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 for greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    generation_chunk_size: int = field(
        default=256, metadata={"help": "Answers per result file: the unit of resumption and of sharding over ranks."}
    )
    generation_decode_workers: int = field(default=2, metadata={"help": "Threads decoding a batch's clips."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs one model copy spans."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: share of GPU memory."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vllm: longest prompt + answer."})
    vllm_lora_mode: str = field(default="request", metadata={"help": "vllm: `request` (LoRARequest) or `merge`."})
    vllm_max_lora_rank: int = field(default=64, metadata={"help": "vllm: largest LoRA rank served."})

    def __post_init__(self):
        if isinstance(self.task_options, str):
            self.task_options = json.loads(self.task_options) if self.task_options.strip() else None
        if self.cycle_init not in ("base", "previous"):
            raise ValueError(f"cycle_init must be `base` or `previous`, not {self.cycle_init!r}.")

    @property
    def dataset_repo(self) -> str | None:
        return self.hub_dataset_repo or self.hub_repo

    @property
    def model_repo(self) -> str | None:
        return self.hub_model_repo or self.hub_repo

    def generation_settings(self, num_frames: int | None, video_fps: float | None, seed: int) -> GenerationSettings:
        return GenerationSettings(
            backend=self.generation_backend,
            batch_size=self.generation_batch_size,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            num_frames=num_frames,
            video_fps=video_fps,
            chunk_size=self.generation_chunk_size,
            seed=seed,
            decode_workers=self.generation_decode_workers,
            tensor_parallel_size=self.vllm_tensor_parallel_size,
            gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            max_model_len=self.vllm_max_model_len,
            lora_mode=self.vllm_lora_mode,
            max_lora_rank=self.vllm_max_lora_rank,
        )


def parse_configs(types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse dataclasses from `--config file.yaml` plus `--field value` overrides (flags win over YAML)."""
    from trl import TrlParser

    parser = TrlParser(types)
    return tuple(parser.parse_args_and_config(args=argv, fail_with_unknown_args=True))


def config_dict(*configs: Any) -> dict[str, Any]:
    """The resolved settings as one flat dict (what a recipe would contain), secrets removed."""
    out: dict[str, Any] = {}
    for config in configs:
        for f in fields(config):
            value = getattr(config, f.name)
            if "token" in f.name:
                continue
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, enum.Enum):
                value = value.value
            if is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)
            try:
                json.dumps(value)
            except TypeError:
                value = str(value)
            out[f.name] = value
    return out


def save_config(path: str | Path, *configs: Any) -> Path:
    """Write the resolved settings as YAML (a recipe that reproduces the run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_dict(*configs), sort_keys=True))
    return path
