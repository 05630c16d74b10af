"""Every recipe parses with the parser `vstar cycle` uses, and the commands in its header are valid: the build
command's flags, the accelerate config it launches with, the recipe it names and the overrides it suggests."""

import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE_CONFIGS = RECIPES / "accelerate_configs"
LOOP_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE_CONFIGS not in p.parents)


def header_commands(path: Path) -> list[str]:
    """The shell commands in a recipe's comments, `\\` continuations joined."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    text = re.sub(r"\\\s*\n\s*", " ", "\n".join(lines))
    return [m.group(0) for m in re.finditer(r"(vstar build|accelerate launch) [^\n]*", text)]


def test_recipes_are_found():
    names = {str(p.relative_to(RECIPES)) for p in LOOP_RECIPES}
    for model in ("Qwen2.5-VL-7B-Instruct", "Qwen3-VL-8B-Instruct", "llava-onevision-qwen2-7b-ov-hf"):
        for dataset in ("kinetics700", "finediving"):
            assert f"{model}/{dataset}/config_lora.yaml" in names


@pytest.mark.parametrize("recipe", LOOP_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses_and_its_commands_are_valid(recipe):
    from vstar.cli import parse_build_args
    from vstar.configs import CycleConfig, parse_configs
    from vstar.tasks.base import get_task
    from vstar.train.sft import VStarSFTConfig

    # What `vstar cycle --config recipe.yaml` does: an unknown key fails.
    cycle, train = parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(recipe)])
    written = yaml.safe_load(recipe.read_text())
    assert cycle.task == written["task"]
    # The task exists and takes the recipe's options.
    get_task(cycle.task, **(cycle.task_options or {}))
    if "model_name_or_path" in written:
        assert train.model_name_or_path == written["model_name_or_path"]

    known_flags = {f.name for f in fields(CycleConfig)} | {f.name for f in fields(VStarSFTConfig)}
    for command in header_commands(recipe):
        args = shlex.split(command)
        if args[:2] == ["vstar", "build"]:
            source_config, _ = parse_build_args(args[2], args[3:])
            known_flags |= {f.name for f in fields(source_config)}
            continue
        config_file = args[args.index("--config_file") + 1]
        assert config_file.startswith("recipes/accelerate_configs/")
        assert (RECIPES.parent / config_file).is_file(), f"{recipe}: {config_file} does not exist"
        launched = args[args.index("--config") + 1]
        assert launched == "..." or RECIPES.parent / launched == recipe, f"{recipe} launches {launched}"
    # Every accelerate config and override the comments mention exists.
    comments = "\n".join(line for line in recipe.read_text().splitlines() if line.startswith("#"))
    for config_file in re.findall(r"recipes/accelerate_configs/[\w.-]+", comments):
        assert (RECIPES.parent / config_file).is_file(), f"{recipe}: {config_file} does not exist"
    suggested = set(re.findall(r"(?<![\w-])--(\w+)", comments)) - {"config", "config_file"}
    assert suggested <= known_flags, f"{recipe}: unknown flags {sorted(suggested - known_flags)}"


def launch_options():
    from accelerate.commands.launch import launch_command_parser

    return {action.dest: action for action in launch_command_parser()._actions}


@pytest.mark.parametrize("path", sorted(ACCELERATE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_is_valid(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    # accelerate's own loader: unknown top-level keys and unknown enum values fail.
    config = ClusterConfig.from_yaml_file(str(path))
    options = launch_options()
    assert config.mixed_precision in options["mixed_precision"].choices
    assert config.num_processes >= 1
    if config.distributed_type in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        assert config.num_processes >= 2  # `accelerate launch` refuses fewer
    if config.distributed_type == DistributedType.DEEPSPEED:
        assert config.deepspeed_config.get("zero_stage") in (0, 1, 2, 3)
    if config.distributed_type == DistributedType.FSDP:
        assert config.fsdp_config
    # Nested settings become `accelerate launch` options (FSDP ones with an `fsdp_` prefix); the loader does not
    # check them, so a misspelt key would be silently ignored.
    nested = [(key, value) for key, value in config.deepspeed_config.items()]
    nested += [(key if key.startswith("fsdp") else f"fsdp_{key}", value) for key, value in config.fsdp_config.items()]
    for key, value in nested:
        assert key in options, f"{path.name}: {key} is not an accelerate launch option"
        if options[key].choices:
            assert str(value) in options[key].choices, f"{path.name}: {key}={value}"
