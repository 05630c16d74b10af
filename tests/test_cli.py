"""The `vstar` command line: grouped and cached help, one recipe for every command, settings checked when a command
starts, and one line (exit status 2) for a bad input.

Run: `python -m pytest tests/test_cli.py -q`
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from vstar.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "recipes" / "demo" / "config_shapes_tiny.yaml"
LOOP_RECIPES = sorted(p for p in (REPO / "recipes").rglob("config_*.yaml"))


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Commands write their default outputs (results.json, verified.parquet, subset records) where they run.
    monkeypatch.chdir(tmp_path)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """`vstar ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("vstar")]


@pytest.fixture()
def help_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VSTAR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path / "cache"


def test_cycle_help_lists_vstar_groups_first_then_the_trainer(help_cache, capsys):
    code, out, _ = run(["cycle", "--help"], capsys)
    assert code == 0
    lines = out.splitlines()
    headings = [line for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[:3] == ["options:", "CycleConfig:", "VStarSFTConfig:"]
    assert headings[-1].startswith("trainer settings (inherited from trl.SFTConfig")
    position = {name: out.index(f"  --{name} ") for name in ("source_dataset", "lora_target", "learning_rate")}
    trainer_at = out.index("trainer settings (inherited")
    # vstar's loop and training settings come before every inherited one.
    assert position["source_dataset"] < position["lora_target"] < trainer_at < position["learning_rate"]
    assert lines[0].startswith("usage: vstar cycle [--config RECIPE.yaml]")

    # The second call is served from the cache: same text, without importing the trainer (a fresh process).
    cached = list((help_cache / "help").glob("*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == out
    started = time.perf_counter()
    fresh = subprocess.run(
        [sys.executable, "-m", "vstar.cli", "cycle", "--help"], capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - started
    assert fresh.returncode == 0
    if len(list((help_cache / "help").glob("*.txt"))) == 1:  # no source file changed in between
        assert fresh.stdout == out and elapsed < 5, elapsed


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--version"], "vstar 0.1.0"),
        (["--help"], "usage: vstar <command>"),
        (["build", "--help"], "usage: vstar build SOURCE"),
        (["build", "shapes", "--help"], "--num_train"),
        (["build", "kinetics", "--help"], "--annotations"),
        (["build", "finediving", "--help"], "--frames"),
        (["build", "folder", "--help"], "--videos"),
        (["build", "table", "--help"], "--label_columns"),
        (["push", "--help"], "usage: vstar push RUN_DIR"),
        (["eval", "--help"], "EvalConfig:"),
        (["train", "--help"], "VStarSFTConfig:"),
    ],
)
def test_help_and_version_exit_zero(argv, expected, help_cache, capsys):
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert expected in out


def test_help_of_generate_groups_settings_and_generation(help_cache, capsys):
    code, out, _ = run(["generate", "--help"], capsys)
    assert code == 0
    assert out.index("GenerateConfig:") < out.index("GenerationSettings:")
    assert "trainer settings" not in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["frob"], "unknown command 'frob'; commands: build, generate"),
        (["cycel"], "(did you mean cycle?)"),
        (["build"], "a source name comes first: vstar build SOURCE ... (finediving, folder, kinetics"),
        (["build", "kinetcs"], "Unknown source 'kinetcs' (did you mean kinetics?). Known sources: finediving,"),
        (["push"], "a run directory comes first"),
    ],
)
def test_unknown_names_give_one_line_with_the_known_ones(argv, expected, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert len(error_lines(err)) == 1 and expected in err and "Traceback" not in err


def test_unknown_task_names_the_known_tasks(shapes_dir, tmp_path, capsys):
    code, _, err = run(["eval", "--model", str(tmp_path), "--dataset", str(shapes_dir), "--task", "shape"], capsys)
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "Unknown task 'shape' (did you mean shapes?)" in line and "action_recognition" in line


def recipe_for(tmp_path: Path, **values) -> Path:
    """The demo recipe (the loop's fields and the training fields in one file) plus `values`."""
    recipe = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe.update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_eval_reads_the_loop_recipe(tiny_model_dirs, shapes_dir, tmp_path, capsys):
    model = str(tiny_model_dirs["qwen2_5_vl"])
    recipe = recipe_for(tmp_path, source_dataset=str(shapes_dir), model_name_or_path=model, eval_limit=4)
    output = tmp_path / "results.json"
    code, _, err = run(["eval", "--config", str(recipe), "--output", str(output), "--max_new_tokens", "6"], capsys)
    assert code == 0, err
    results = json.loads(output.read_text())
    # The recipe's names map onto eval's own: model_name_or_path -> model, source_dataset -> dataset,
    # eval_split -> split, eval_limit -> limit; a flag still wins (max_new_tokens).
    assert results["model"] == model and results["dataset"] == str(shapes_dir) and results["split"] == "test"
    assert results["metrics"]["num_examples"] == 4
    assert results["generation"]["max_new_tokens"] == 6


def test_train_reads_the_documented_demo_recipe(tiny_model_dirs, shapes_dir, tmp_path, capsys):
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task

    seed = write_seed_dataset(tmp_path / "seed", seed_rows(shapes_dir, 2, get_task("shapes"), seed=0))
    output = tmp_path / "model"
    argv = ["train", "--config", str(DEMO_RECIPE), "--dataset", str(seed), "--output_dir", str(output),
            "--model_name_or_path", str(tiny_model_dirs["qwen2_5_vl"]), "--max_steps", "1",
            "--per_device_train_batch_size", "2", "--disable_tqdm", "true"]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["global_step"] == 1 and (output / "adapter_config.json").is_file()


def test_recipe_keys_of_other_commands_are_skipped_but_typos_are_errors(tmp_path):
    from vstar.configs import parse_configs
    from vstar.evaluate.cli import EvalConfig
    from vstar.generate.base import GenerationSettings

    recipe = recipe_for(tmp_path, source_dataset="data/k700", model_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct")
    config, settings = parse_configs((EvalConfig, GenerationSettings), ["--config", str(recipe), "--limit", "3"])
    assert (config.model, config.dataset, config.split, config.task) == (
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "data/k700",
        "test",
        "shapes",
    )
    assert config.limit == 3  # the flag beats the recipe's eval_limit
    assert (settings.batch_size, settings.max_new_tokens, settings.num_frames) == (16, 32, 8)

    from vstar.errors import ConfigError

    typo = recipe_for(tmp_path, source_dataset="d", model_name_or_path="m/m", lora_alpah=8)
    with pytest.raises(
        ConfigError, match=r"recipe .*recipe.yaml: unknown setting 'lora_alpah' \(did you mean lora_alpha"
    ):
        parse_configs((EvalConfig, GenerationSettings), ["--config", str(typo)])


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--num_cycle", "2"], r"unknown flag --num_cycle \(did you mean --num_cycles"),
        (["--lora_rank", "8"], r"unknown flag --lora_rank \(did you mean --local_rank, --lora_r, "),
        (["--num_cycles", "-1"], r"num_cycles must be at least 0, not -1"),
        (["--source_offset", "-3"], r"source_offset must be at least 0, not -3"),
        (["--generation_batch_size", "0"], r"generation_batch_size must be at least 1, not 0"),
        (["--generation_chunk_size", "0"], r"generation_chunk_size must be at least 1, not 0"),
        (["--num_frames", "0"], r"num_frames must be at least 1 \(or unset\), not 0"),
        (["--per_device_train_batch_size", "0"], r"per_device_train_batch_size must be at least 1, not 0"),
        (["--finetuning", "qlora"], r"finetuning must be `lora` or `full`, not 'qlora'"),
        (["--lora_target", "(q_proj"], r"lora_target '\(q_proj' is neither `language` nor `all` nor a valid regex"),
        (["--cycle_init", "prev"], r"cycle_init must be `base` or `previous`, not 'prev' \(did you mean previous"),
        (["--generation_backend", "vlm"], r"Unknown generation backend 'vlm' \(did you mean vllm"),
        (["--top_p", "0"], r"top_p must be in \(0, 1\], not 0"),
        (["--task_options", "{classes: [a]}"], r"task_options is not valid JSON"),
        (["--num_cycles", "three"], r"argument --num_cycles/--num-cycles: invalid int value: 'three'"),
    ],
)
def test_cycle_settings_are_checked_when_the_command_starts(flags, expected):
    from vstar.configs import CycleConfig, parse_configs
    from vstar.errors import VStarError
    from vstar.train.sft import VStarSFTConfig

    with pytest.raises(VStarError, match=expected):
        parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(DEMO_RECIPE), *flags])


@pytest.mark.parametrize(
    "command, flags, expected",
    [
        ("eval", ["--batch_size", "0"], "batch_size must be at least 1, not 0"),
        ("eval", ["--limit", "0"], "limit must be at least 1 (or unset), not 0"),
        ("generate", ["--chunk_size", "0"], "chunk_size must be at least 1, not 0"),
        ("generate", ["--num_frames", "-2"], "num_frames must be at least 1 (or unset), not -2"),
        ("generate", ["--attempt", "hinted"], "attempt must be `direct` or `rationalized`, not 'hinted'"),
        ("verify", ["--limit", "-1"], "limit must be at least 1 (or unset), not -1"),
        ("eval", ["--num_cycles", "2"], "--num_cycles is a setting of CycleConfig, which `vstar eval` does not take"),
    ],
)
def test_stage_settings_are_checked_before_any_model_loads(command, flags, expected, shapes_dir, tmp_path, capsys):
    argv = [command, "--dataset", str(shapes_dir), "--task", "shapes", *flags]
    if command != "verify":
        argv += ["--model", str(tmp_path)]  # a folder without a model: nothing may try to load it
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith(f"vstar {command}: error: ") and expected in line


def test_a_missing_model_folder_is_named_with_its_setting(shapes_dir, tmp_path, capsys):
    missing = tmp_path / "runs" / "warm-strat"
    (tmp_path / "runs" / "warm-start").mkdir(parents=True)
    code, _, err = run(["eval", "--model", str(missing), "--dataset", str(shapes_dir), "--task", "shapes"], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert f"model: model folder {missing} does not exist, nor is it a Hub id such as ORG/NAME" in line
    assert "(did you mean warm-start?)" in line


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    argv = ["cycle", "--config", str(DEMO_RECIPE), "--num_cycles", "-1"]
    code, _, err = run([*argv, "--debug"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err and "ConfigError" in err
    assert error_lines(err)[-1] == "vstar cycle: error: num_cycles must be at least 0, not -1"
    monkeypatch.setenv("VSTAR_DEBUG", "1")
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" in err
    monkeypatch.delenv("VSTAR_DEBUG")
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err


def test_library_errors_become_one_line():
    """The expected library errors have a message naming the input and the fix; a bug keeps its type."""
    import pickle

    from huggingface_hub.errors import HFValidationError

    from vstar.errors import user_message

    raw = b"label,id\ncaf\xe9,1\n"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        assert "not UTF-8" in user_message(exc) and "iconv" in user_message(exc)
    hub = HFValidationError("Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/data/runs/model'.")
    assert user_message(hub).startswith("folder /data/runs/model does not exist (nor is it a Hub id")
    assert "download it again" in user_message(pickle.UnpicklingError("pickle data was truncated"))
    assert "'dive_score'" in user_message(KeyError("dive_score"))
    assert user_message(FileNotFoundError(2, "No such file or directory", "/x/y.csv")) == (
        "/x/y.csv does not exist: check the path"
    )
    assert user_message(TypeError("unsupported operand")) is None  # a bug: reported with its traceback


def test_recipes_give_no_deprecation_warning():
    from vstar.configs import CycleConfig, parse_configs
    from vstar.train.sft import VStarSFTConfig

    for recipe in LOOP_RECIPES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(recipe)])
        deprecations = [str(w.message) for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)]
        assert not [m for m in deprecations if "checkpointing" in m], (recipe, deprecations)


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from vstar import cli

    def broken(argv):
        return None + 1  # a bug, not a bad input

    monkeypatch.setitem(cli.COMMANDS, "verify", broken)
    code, _, err = run(["verify"], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("vstar verify: error: unexpected TypeError (a bug")
