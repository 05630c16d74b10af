"""Typed settings of the loop, parsed with `TrlParser` from a recipe YAML plus command-line overrides.

A recipe is one flat YAML file holding the fields of `CycleConfig` (the loop) and `VStarSFTConfig` (training,
which extends `trl.SFTConfig`); `vstar cycle --config recipe.yaml --num_cycles 2` overrides any field.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from vstar.errors import ConfigError, InputError, close_names, did_you_mean
from vstar.generate.base import BACKENDS, GenerationSettings

logger = logging.getLogger(__name__)


def parse_task_options(text: str) -> dict | None:
    """`task_options` given as a JSON string on the command line (a recipe gives a YAML mapping); None when empty.

    The parsing is `vstar.tasks.base.parse_task_options`, the one reader of task options.
    """
    from vstar.tasks.base import parse_task_options as parse

    return parse(text) or None


@dataclass
class EvaluationDecoding:
    """How held-out evaluation decodes, whatever the generation passes sample with (`vstar cycle` and `vstar eval`)."""

    eval_temperature: float = field(
        default=0.0,
        metadata={
            "help": "Held-out evaluation's temperature: 0 (greedy) unless a sampled evaluation is wanted; the "
            "generation passes' `temperature` does not apply to it."
        },
    )
    eval_top_p: float = field(default=1.0, metadata={"help": "Held-out evaluation's nucleus mass (when sampling)."})

    def __post_init__(self) -> None:
        _check_range(self, "eval_temperature", 0)
        _check_range(self, "eval_top_p", 0, 1, low_open=True)

    def evaluation_settings(self, generation: GenerationSettings) -> GenerationSettings:
        """The held-out evaluation's settings: the generation settings, decoded greedily unless asked otherwise."""
        from dataclasses import replace

        sampled = self.eval_temperature > 0
        return replace(generation, temperature=self.eval_temperature, top_p=self.eval_top_p if sampled else 1.0)


@dataclass
class CycleConfig(EvaluationDecoding):
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
    early_stop_metric: str | None = field(
        default=None,
        metadata={
            "help": "What early stopping and the best cycle follow: a held-out metric name, `yield` (the training "
            "yield), or unset for the task's primary metric (accuracy for recognition and multiple choice, "
            "spearman for quality)."
        },
    )
    final_retrain: bool = field(
        default=False,
        metadata={
            "help": "After the last cycle, train a final model from the base on the best cycle's data without "
            "rationalized answers (the paper's final model), into `final/`."
        },
    )
    allow_config_change: bool = field(
        default=False,
        metadata={"help": "Resume a run whose saved settings differ from these in ways that change results."},
    )
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
    num_samples_per_clip: int = field(
        default=1,
        metadata={
            "help": "Answers asked per clip in each generation pass (with `temperature` > 0 they differ): hard "
            "clips still contribute, and rejection-sampling variants of STaR can be run."
        },
    )
    max_accepted_per_clip: int | None = field(
        default=None,
        metadata={"help": "Most distinct verified answers kept per clip (default: every one)."},
    )
    rationalization_temperature: float | None = field(
        default=None, metadata={"help": "Temperature of the hinted retries (default: `temperature`)."}
    )
    rationalization_top_p: float | None = field(
        default=None, metadata={"help": "Nucleus mass of the hinted retries (default: `top_p`)."}
    )
    generation_chunk_size: int = field(
        default=256, metadata={"help": "Answers per result file: the unit of resumption and of sharding over ranks."}
    )
    generation_decode_workers: int = field(default=2, metadata={"help": "Threads decoding a batch's clips."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs one model copy spans."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: share of GPU memory."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vllm: longest prompt + answer."})
    vllm_lora_mode: str = field(default="request", metadata={"help": "vllm: `request` (LoRARequest) or `merge`."})
    vllm_max_lora_rank: int = field(default=64, metadata={"help": "vllm: largest LoRA rank served."})
    hub_base_model_repo: str | None = field(
        default=None,
        metadata={
            "help": "Where a pushed run puts a base model that is a local directory, so the cards' usage snippets "
            "load it (default: `<model repo>-base`); a Hub base model is named, not pushed."
        },
    )
    card_license: str = field(
        default="apache-2.0",
        metadata={"help": "The `license` of the instruction datasets' and models' cards (a Hub licence id)."},
    )
    card_citation: str | None = field(
        default=None,
        metadata={"help": "BibTeX added to the cards' citation block, before Video-STaR's (always included)."},
    )

    def __post_init__(self):
        if isinstance(self.task_options, str):
            self.task_options = parse_task_options(self.task_options)
        # Every value is checked here, when the command starts, not when its stage runs hours later.
        _check_choice(self, "cycle_init", ("base", "previous"))
        _check_range(self, "num_cycles", 0)
        _check_range(self, "source_offset", 0, what="the number of training rows to skip")
        _check_range(self, "source_limit", 1, optional=True)
        _check_range(self, "eval_limit", 1, optional=True)
        _check_range(self, "early_stop_patience", 1, optional=True)
        _check_range(self, "early_stop_min_delta", 0)
        BACKENDS.get(self.generation_backend)
        _check_range(self, "generation_batch_size", 1)
        _check_range(self, "max_new_tokens", 1)
        _check_range(self, "temperature", 0)
        _check_range(self, "top_p", 0, 1, low_open=True)
        super().__post_init__()
        _check_range(self, "num_samples_per_clip", 1)
        _check_range(self, "max_accepted_per_clip", 1, optional=True)
        _check_range(self, "rationalization_temperature", 0, optional=True)
        _check_range(self, "rationalization_top_p", 0, 1, low_open=True, optional=True)
        _check_range(self, "generation_chunk_size", 1)
        _check_range(self, "generation_decode_workers", 1)
        _check_range(self, "vllm_tensor_parallel_size", 1)
        _check_range(self, "vllm_gpu_memory_utilization", 0, 1, low_open=True)
        _check_range(self, "vllm_max_model_len", 1, optional=True)
        _check_choice(self, "vllm_lora_mode", ("request", "merge"))
        _check_range(self, "vllm_max_lora_rank", 1)

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

    def pass_settings(self, generation: GenerationSettings, attempt: str) -> GenerationSettings:
        """A generation pass's settings: the hinted retries may sample with their own temperature and top-p."""
        from dataclasses import replace

        if attempt != "rationalized":
            return generation
        return replace(
            generation,
            temperature=generation.temperature
            if self.rationalization_temperature is None
            else self.rationalization_temperature,
            top_p=generation.top_p if self.rationalization_top_p is None else self.rationalization_top_p,
        )


# Every vstar command's settings, as `module:Class`. One recipe drives the whole loop, so a recipe given to one
# command holds keys of the others; those are skipped, while a key of none of them is a typo.
COMMAND_CONFIGS = (
    "vstar.configs:CycleConfig",
    "vstar.train.sft:VStarSFTConfig",
    "vstar.generate.base:GenerationSettings",
    "vstar.evaluate.cli:EvalConfig",
    "vstar.stages:GenerateConfig",
    "vstar.stages:VerifyConfig",
    "vstar.push:PushConfig",
    "vstar.demo:DemoConfig",
    "vstar.train.grpo:VStarGRPOConfig",
    "vstar.stages:AssembleConfig",
    "vstar.synthesize.captions:CaptionConfig",
    "vstar.synthesize.qa:QAConfig",
    "vstar.export:ExportConfig",
    "vstar.curate.split:SplitConfig",
    "vstar.curate.select:SelectConfig",
    "vstar.train.scorer:ScorerTrainConfig",
    "vstar.flywheel:FlywheelConfig",
    "vstar.view.app:ViewConfig",
)

# A command's own field that a recipe spells differently: {class name: {field: recipe key}}. Used only when the
# recipe does not set the field itself; a flag still overrides both.
RECIPE_ALIASES: dict[str, dict[str, str]] = {
    "EvalConfig": {
        "model": "model_name_or_path",
        "dataset": "source_dataset",
        "split": "eval_split",
        "limit": "eval_limit",
    },
    "GenerateConfig": {
        "model": "model_name_or_path",
        "dataset": "source_dataset",
        "dataset_revision": "source_revision",
        "split": "train_split",
        "limit": "source_limit",
        "offset": "source_offset",
        "subset_seed": "seed",
    },
    "VerifyConfig": {
        "dataset": "source_dataset",
        "dataset_revision": "source_revision",
        "split": "train_split",
        "limit": "source_limit",
        "offset": "source_offset",
        "subset_seed": "seed",
    },
    "AssembleConfig": {
        "dataset": "source_dataset",
        "dataset_revision": "source_revision",
        "split": "train_split",
        "limit": "source_limit",
        "offset": "source_offset",
        "subset_seed": "seed",
    },
    "GenerationSettings": {
        "backend": "generation_backend",
        "batch_size": "generation_batch_size",
        "chunk_size": "generation_chunk_size",
        "decode_workers": "generation_decode_workers",
        "tensor_parallel_size": "vllm_tensor_parallel_size",
        "gpu_memory_utilization": "vllm_gpu_memory_utilization",
        "max_model_len": "vllm_max_model_len",
        "lora_mode": "vllm_lora_mode",
        "max_lora_rank": "vllm_max_lora_rank",
    },
}

TRAINER_GROUP = "trainer settings (inherited from trl.SFTConfig / transformers.TrainingArguments)"

_program = "vstar"


def set_program(name: str) -> None:
    """The command name that usage lines and messages show (`vstar eval`); the CLI sets it before dispatching."""
    global _program
    _program = name


def command_field_names() -> dict[str, str]:
    """Every field of every vstar command's settings, mapped to the class that defines it."""
    import importlib

    owners: dict[str, str] = {}
    for spec in COMMAND_CONFIGS:
        module_name, class_name = spec.split(":")
        try:
            config_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:  # a command that cannot load does not hide the others
            logger.debug("Cannot list the settings of %s: %s", spec, exc)
            continue
        for f in fields(config_class):
            owners.setdefault(f.name, class_name)
    return owners


def _is_own_field(dtype: type, name: str) -> bool:
    # A field declared by a vstar class (not inherited from trl / transformers).
    for klass in dtype.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass.__module__.split(".")[0] == "vstar"
    return True


def _make_parser(types: tuple[type, ...]):
    from trl import TrlParser

    class GroupedParser(TrlParser):
        """TrlParser whose help lists each vstar dataclass in its own group and the inherited trainer settings last,
        and whose errors are raised (one line for the CLI) instead of printed with the usage."""

        def _add_dataclass_arguments(self, dtype):
            from typing import get_type_hints

            doc = (dtype.__doc__ or "").strip().splitlines()
            own = self.add_argument_group(dtype.__name__, doc[0] if doc else None)
            inherited = None
            hints = get_type_hints(dtype)
            for f in fields(dtype):
                if not f.init:
                    continue
                f.type = hints[f.name]
                if _is_own_field(dtype, f.name):
                    group = own
                else:
                    if inherited is None:
                        inherited = self.add_argument_group(
                            TRAINER_GROUP, "Passed to the trainer as they are: see the TRL and transformers docs."
                        )
                    group = inherited
                self._parse_dataclass_field(group, f)

        def format_help(self):
            # The trainer's ~150 settings come after every vstar group.
            trainer = [g for g in self._action_groups if g.title == TRAINER_GROUP]
            self._action_groups = [g for g in self._action_groups if g.title != TRAINER_GROUP] + trainer
            return super().format_help()

        def error(self, message):
            raise ConfigError(f"{message} (`{self.prog} --help` lists the settings)")

    return GroupedParser(
        types,
        prog=_program,
        allow_abbrev=False,  # `--num_cycle` is a typo to report, not a prefix of `--num_cycles` to guess
        usage=f"{_program} [--config RECIPE.yaml] [--FIELD VALUE ...] [--debug]",
        description="Settings come from the recipe given with --config (a YAML mapping of the fields below; keys of "
        "other vstar commands are skipped) and from flags, which win over the recipe. --debug (or VSTAR_DEBUG=1) "
        "shows the traceback of an error.",
    )


def _read_recipe(path: str) -> dict[str, Any]:
    recipe = Path(path)
    if not recipe.is_file():
        kind = "is a folder, not a file" if recipe.is_dir() else "does not exist"
        raise ConfigError(f"recipe {path} {kind}: pass --config PATH/TO/RECIPE.yaml")
    try:
        data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8 YAML") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {path} must be a YAML mapping of settings (`key: value` lines), not a {type(data).__name__}"
        )
    return data


def _check_recipe_value(path: str, key: str, value: Any, action) -> None:
    # argparse converts string defaults with the field's type, never other YAML values: check those here.
    if value is None or isinstance(value, str):
        return
    expected = action.type

    def wrong_item(item: Any) -> bool:
        return (expected is int and (isinstance(item, bool) or not isinstance(item, int))) or (
            expected is float and (isinstance(item, bool) or not isinstance(item, int | float))
        )

    if action.nargs == "+":  # a list setting (`reward_weights: [1.0, 0.1]`): check its items
        wrong = not isinstance(value, list) or any(wrong_item(item) for item in value)
    else:
        wrong = wrong_item(value)
    if wrong:
        kind = "a list" if action.nargs == "+" else getattr(expected, "__name__", str(expected))
        raise ConfigError(f"recipe {path}: {key} must be {kind}, not {value!r}")


def parse_configs(types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse dataclasses from `--config recipe.yaml` plus `--field value` overrides (flags win over the recipe).

    A recipe key that belongs to another vstar command's settings is skipped (one recipe drives every command); a
    key of no vstar command, or an unknown flag, is an error naming the close matches. Each parsed config's values
    are range-checked (`check_config`) before any work starts.

    Args:
        types: the dataclasses to fill, in order.
        argv: the command line after the command name (default: `sys.argv[1:]`).

    Raises:
        ConfigError: an unknown key or flag, a malformed recipe or value, or a value out of range.
    """
    import sys

    parser = _make_parser(tuple(types))
    args = list(sys.argv[1:] if argv is None else argv)
    recipe_path = None
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise ConfigError("--config needs a recipe path: --config RECIPE.yaml")
        recipe_path = args[at + 1]
        del args[at : at + 2]
    elif any(a.startswith("--config=") for a in args):
        at = next(i for i, a in enumerate(args) if a.startswith("--config="))
        recipe_path = args.pop(at).split("=", 1)[1]
    actions = {a.dest: a for a in parser._actions}
    if recipe_path is not None:
        recipe = _read_recipe(recipe_path)
        env = recipe.pop("env", None) or {}
        if not isinstance(env, dict):
            raise ConfigError(f"recipe {recipe_path}: `env` must be a mapping of environment variables")
        import os

        for key, value in env.items():
            os.environ[str(key)] = str(value)
        for config_class in types:
            for own, key in RECIPE_ALIASES.get(config_class.__name__, {}).items():
                if own not in recipe and recipe.get(key) is not None and own in actions:
                    recipe[own] = recipe[key]
        unknown = [key for key in recipe if key not in actions]
        if unknown:
            owners = command_field_names()
            skipped = [key for key in unknown if key in owners]
            if skipped:
                logger.debug("%s: skipping recipe keys of other commands: %s", _program, ", ".join(skipped))
            typos = [key for key in unknown if key not in owners]
            if typos:
                hints = "; ".join(f"{key!r}{did_you_mean(key, set(owners) | set(actions))}" for key in typos)
                raise ConfigError(f"recipe {recipe_path}: unknown setting {hints}; remove it or fix its name")
        known = {key: value for key, value in recipe.items() if key in actions}
        for key, value in known.items():
            _check_recipe_value(recipe_path, key, value, actions[key])
        parser.set_defaults_with_config(**known)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if remaining:
        flags = [r for r in remaining if r.startswith("-")] or remaining
        raise ConfigError(_unknown_flags_message(flags, actions))
    for config in parsed:
        check_config(config)
    return tuple(parsed)


def _unknown_flags_message(flags: list[str], actions: dict) -> str:
    owners = command_field_names()
    options = {dest for dest, a in actions.items() if a.option_strings and dest != "help"}
    parts = []
    for flag in flags:
        name = flag.lstrip("-").split("=", 1)[0]
        if not flag.startswith("-"):
            parts.append(f"unexpected value {flag!r} (flags are `--name value`)")
        elif name in owners:
            parts.append(f"--{name} is a setting of {owners[name]}, which `{_program}` does not take")
        else:
            close = close_names(name, options)
            parts.append(
                f"unknown flag --{name}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else "")
            )
    return f"{'; '.join(parts)}; `{_program} --help` lists the settings"


def _check_range(
    config: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    optional: bool = False,
    low_open: bool = False,
    what: str | None = None,
) -> None:
    """Raise `ConfigError` unless `config.name` lies in [low, high] (`(low, high]` with `low_open`); None passes
    only when `optional`."""
    value = getattr(config, name, None)
    if value is None and optional:
        return
    bad = value is None or isinstance(value, bool) or not isinstance(value, int | float)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value > high
    if bad:
        if low is not None and high is not None:
            bounds = f"in {'(' if low_open else '['}{low}, {high}]"
        elif low is not None:
            bounds = f"greater than {low}" if low_open else f"at least {low}"
        else:
            bounds = f"at most {high}"
        unset = " (or unset)" if optional else ""
        raise ConfigError(f"{name} must be {bounds}{unset}, not {value!r}{': ' + what if what else ''}")


def _check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name, None)
    if value not in choices:
        options = " or ".join(f"`{c}`" for c in choices)
        raise ConfigError(f"{name} must be {options}, not {value!r}{did_you_mean(str(value), choices)}")


def _check_generation(settings: Any) -> None:
    _check_range(settings, "batch_size", 1)
    _check_range(settings, "max_new_tokens", 1)
    _check_range(settings, "temperature", 0)
    _check_range(settings, "top_p", 0, 1, low_open=True)
    _check_range(settings, "num_frames", 1, optional=True)
    _check_range(settings, "video_fps", 0, optional=True, low_open=True)
    _check_range(settings, "chunk_size", 1)
    _check_range(settings, "decode_workers", 1)
    _check_range(settings, "tensor_parallel_size", 1)
    _check_range(settings, "gpu_memory_utilization", 0, 1, low_open=True)
    _check_range(settings, "max_model_len", 1, optional=True)
    _check_range(settings, "max_lora_rank", 1)
    _check_choice(settings, "lora_mode", ("request", "merge"))


def _check_stage_data(config: Any) -> None:
    if isinstance(getattr(config, "task_options", None), str):
        config.task_options = parse_task_options(config.task_options)
    _check_range(config, "limit", 1, optional=True)
    if hasattr(config, "attempt"):
        _check_choice(config, "attempt", ("direct", "rationalized"))


def _check_training(config: Any) -> None:
    from vstar.train.sft import LORA_TARGETS

    _check_choice(config, "finetuning", ("lora", "full"))
    target = config.lora_target
    if target not in LORA_TARGETS:
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"lora_target must be `language`, `all` or a module-name regex, not {target!r}")
        try:
            re.compile(target)
        except re.error as exc:
            raise ConfigError(
                f"lora_target {target!r} is neither `language` nor `all` nor a valid regex ({exc}): "
                "use `language`, `all` or a pattern such as `.*language_model.*\\.(q_proj|v_proj)$`"
            ) from None
    _check_range(config, "lora_r", 1)
    _check_range(config, "lora_alpha", 0, low_open=True)
    _check_range(config, "lora_dropout", 0, 1)
    _check_range(config, "num_frames", 1, optional=True)
    _check_range(config, "video_fps", 0, optional=True, low_open=True)
    _check_range(config, "per_device_train_batch_size", 1)
    _check_range(config, "per_device_eval_batch_size", 1)
    _check_range(config, "gradient_accumulation_steps", 1)
    _check_range(config, "torch_threads", 1, optional=True)
    _check_range(config, "clip_cache_mb", 0)
    _check_range(config, "learning_rate", 0)
    if (config.max_steps or 0) <= 0:
        _check_range(config, "num_train_epochs", 0, low_open=True, what="set it, or max_steps, above 0")


def check_reference(value: str | None, setting: str, kind: str) -> None:
    """A model, adapter or dataset setting names an existing folder or something shaped like a Hub id[@revision].

    A missing local folder is reported here, naming the setting, instead of as huggingface_hub's "Repo id must be
    in the form ..." once loading starts. Whether a Hub id exists is left to the Hub.

    Args:
        value: the setting's value.
        setting: the setting's name (the flag without `--`).
        kind: what it should be, for the message ("model", "source dataset").

    Raises:
        ConfigError: the setting is empty.
        InputError: the value is no existing path and cannot be a Hub id.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not value:
        raise ConfigError(
            f"{setting} is not set: pass --{setting} with a {kind} folder or Hub id (or set it in the recipe)"
        )
    path = Path(value).expanduser()
    if path.exists():
        return
    name = value.rsplit("@", 1)[0] if "@" in value else value
    local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")
    if not local:
        try:
            validate_repo_id(name)
            return
        except HFValidationError:
            pass
    hint = ""
    parent = path.parent
    if parent.is_dir():
        hint = did_you_mean(path.name, [p.name for p in parent.iterdir()])
    elif str(parent) not in ("", "."):
        hint = f" ({parent} does not exist either)"
    raise InputError(
        f"{setting}: {kind} folder {value} does not exist, nor is it a Hub id such as ORG/NAME{hint}: check the path"
    )


def _check_model_stage(config: Any) -> None:
    """`vstar eval` and `vstar generate`: a model (and adapter) answering about a dataset."""
    _check_stage_data(config)
    check_reference(config.model, "model", "model")
    check_reference(config.dataset, "dataset", "source dataset")
    if config.adapter:
        check_reference(config.adapter, "adapter", "adapter")


def _check_verify(config: Any) -> None:
    _check_stage_data(config)
    check_reference(config.dataset, "dataset", "source dataset")
    if getattr(config, "answers", None):
        if not Path(config.answers).is_file():
            raise InputError(f"answers: file {config.answers} does not exist: give a JSON Lines file of answers")
        return
    generations = Path(config.generations)
    if not generations.is_dir():
        raise InputError(
            f"generations: folder {generations} does not exist: pass the --output_dir of `vstar generate` "
            "(run it first)"
        )


# Range checks of the settings classes defined outside this module, by class name (a subclass is checked too).
_CHECKS = {
    "GenerationSettings": _check_generation,
    "GenerateConfig": _check_model_stage,
    "VerifyConfig": _check_verify,
    "EvalConfig": _check_model_stage,
    "VStarSFTConfig": _check_training,
}


def check_config(config: Any) -> None:
    """Range-check a parsed settings object, so a bad value stops a command when it starts, not hours in.

    `CycleConfig` checks itself in `__post_init__`; the other commands' classes are checked here by name.

    Args:
        config: a settings dataclass instance.

    Raises:
        ConfigError: naming the setting, its allowed range and the value given.
    """
    names = {klass.__name__ for klass in type(config).__mro__}
    for class_name, check in _CHECKS.items():
        if class_name in names:
            check(config)


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
