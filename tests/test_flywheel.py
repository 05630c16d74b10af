"""`vstar flywheel`: two real cycles of caption -> select -> train on shapes clips, the trinity, resumption.

The starting model is the tiny Qwen2.5-VL trained to answer the caption prompts in format (`vstar.testing.teachers`),
the scorer a tiny CLIP taught the colours by the scorer trainer (`vstar.testing.flywheel_demo` builds both, as the
demo recipe's inputs); clips are real H.264 files, training is TRL + PEFT. Nothing is mocked; the resumption test
replaces the stages' workers with functions that fail, to prove that no finished stage runs again.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file

from vstar.cli import main as cli_main
from vstar.errors import ConfigError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "config_flywheel_shapes_tiny.yaml"
NUM_CLIPS = 6
# The fixtures train the teacher (~50 s on one thread) and run two cycles (~10 s): the tests using them are slow.


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from vstar.testing.flywheel_demo import build_flywheel_inputs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_flywheel_inputs(tmp_path_factory.mktemp("flywheel-inputs"), num_clips=NUM_CLIPS)
    finally:
        torch.set_num_threads(threads)


def _flags(inputs: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "flywheel", "--config", str(RECIPE), "--source_dataset", str(inputs["source"]),
        "--model_name_or_path", str(inputs["teacher"]), "--scorer", str(inputs["scorer"]), "--run_dir", str(run_dir),
        "--output_dir", str(run_dir / "train"), "--limit", str(NUM_CLIPS), "--num_cycles", "2", "--max_steps", "8",
        "--temperature", "0", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(inputs, tmp_path_factory) -> Path:
    """Two cycles through the command line, with the demo recipe and a threshold that keeps about half."""
    run_dir = tmp_path_factory.mktemp("flywheel") / "run"
    cli_main(_flags(inputs, run_dir, "--min_score", "0.0"))
    return run_dir


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


@pytest.mark.slow
def test_every_stage_loads_and_metrics_are_the_kept_captions_trinity(run, inputs):
    from vstar.io import SourceRows, load_split
    from vstar.tasks.base import load_task

    source = load_split(inputs["source"], "train")
    task = load_task("shapes", features=source.features)
    labels = SourceRows(source)
    history = json.loads((run / "metrics.json").read_text())["cycles"]
    assert [c["cycle"] for c in history] == [1, 2]
    assert (run / "cycles.png").stat().st_size > 0
    for entry in history:
        cycle = run / f"cycle-{entry['cycle']}"
        captions = load_dataset(str(cycle / "captions"))["train"]
        selected = load_dataset(str(cycle / "selected"))["train"]
        dataset = load_dataset(str(cycle / "dataset"))["train"]
        assert len(captions) == NUM_CLIPS  # every clip captioned by the model (format teacher: all usable)
        # Kept rows are the selected ones, in the conversation the trainer reads.
        assert sorted(dataset["id"]) == sorted(selected["id"])
        assert all(s >= 0.0 for s in selected["score"])
        row = dataset[0]
        assert row["messages"][0]["content"][0]["type"] == "video"
        assert row["messages"][0]["content"][1]["text"] == "Describe this video in detail."
        assert row["messages"][1]["content"][0]["text"] == row["answer"]
        assert sorted(dataset["id"]) == sorted(captions["id"])  # min_score 0: every cosine here is above it
        # The trinity, recomputed here from the kept captions.
        kept = selected["description"]
        words = [_words(d) for d in kept]
        total = sum(map(len, words))
        assert entry["quantity"] == {"kept": len(kept), "clips": NUM_CLIPS, "share_kept": len(kept) / NUM_CLIPS}
        assert entry["diversity"]["tokens"] == total
        distinct = len({w for ws in words for w in ws})
        bigrams = len({b for ws in words for b in zip(ws, ws[1:])})
        assert entry["diversity"]["distinct_tokens_per_1k"] == pytest.approx(1000 * distinct / total)
        assert entry["diversity"]["distinct_bigrams_per_1k"] == pytest.approx(1000 * bigrams / total)
        assert entry["quality"]["mean_score"] == pytest.approx(sum(selected["score"]) / len(kept))
        passes = [task.verify(d, task.label(labels[i])).passed for d, i in zip(kept, selected["id"])]
        assert entry["quality"]["verifier_pass_rate"] == pytest.approx(sum(passes) / len(passes))
    # Cycle 2 was captioned by the model cycle 1 trained.
    assert history[1]["model"] == history[0]["trained_model"]
    assert history[1]["model"].endswith("cycle-1/model")


@pytest.mark.slow
def test_the_adapter_moved_each_cycle(run):
    first = load_file(str(run / "cycle-1" / "model" / "adapter_model.safetensors"))
    second = load_file(str(run / "cycle-2" / "model" / "adapter_model.safetensors"))
    lora_b = [k for k in first if "lora_B" in k]
    assert lora_b and any(first[k].abs().max() > 0 for k in lora_b)  # from PEFT's zero init
    assert any(not torch.equal(first[k], second[k]) for k in first)  # cycle 2 continued training


@pytest.mark.slow
def test_a_rerun_redoes_nothing_and_a_kill_after_training_completes_the_stage(run, inputs, monkeypatch):
    import vstar.curate.select
    import vstar.flywheel

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    before = (run / "metrics.json").read_text()
    adapter = (run / "cycle-2" / "model" / "adapter_model.safetensors").read_bytes()
    # A kill between training's end and the state's mark: the finished model is in `model.partial`.
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["cycle-2/train"]
    (run / "state.json").write_text(json.dumps(state))
    (run / "cycle-2" / "model").rename(run / "cycle-2" / "model.partial")
    for name in ("train", "caption", "get_backend"):
        monkeypatch.setattr(vstar.flywheel, name, must_not_run)
    monkeypatch.setattr(vstar.curate.select, "select_captions", must_not_run)
    cli_main(_flags(inputs, run, "--min_score", "0.0"))
    assert (run / "metrics.json").read_text() == before
    assert (run / "cycle-2" / "model" / "adapter_model.safetensors").read_bytes() == adapter
    assert not (run / "cycle-2" / "model.partial").exists()
    assert "cycle-2/train" in json.loads((run / "state.json").read_text())["stages"]


@pytest.mark.slow
def test_a_threshold_above_every_score_stops_with_a_clear_log(inputs, tmp_path, caplog):
    from vstar.configs import parse_configs
    from vstar.flywheel import FlywheelConfig, run_flywheel
    from vstar.train.sft import VStarSFTConfig

    run_dir = tmp_path / "strict"
    config, train_config = parse_configs(
        (FlywheelConfig, VStarSFTConfig), _flags(inputs, run_dir, "--min_score", "0.99")[1:]
    )
    with caplog.at_level(logging.WARNING, logger="vstar.flywheel"):
        history = run_flywheel(config, train_config)
    assert [(c["cycle"], c["quantity"]["kept"], c["select_rejected"]) for c in history] == [(1, 0, NUM_CLIPS)]
    assert "Cycle 1 kept no caption" in caplog.text and "Lower --min_score" in caplog.text
    assert not (run_dir / "cycle-1" / "model").exists()
    rejected = load_dataset(str(run_dir / "cycle-1" / "dataset"), "rejected")["train"]
    assert len(rejected) == NUM_CLIPS
    assert all(re.match(r"best score -?[\d.]+ < min_score 0.99", r) for r in rejected["verification"]["reason"])
    assert history[0]["quality"]["mean_score"] is None and history[0]["diversity"]["tokens"] == 0


def test_trinity_of_a_small_example():
    from vstar.flywheel import trinity

    stats = trinity(["A red square.", "a red circle moves"], [0.2, 0.4], clips=4, passed=[True, False])
    assert stats["quantity"] == {"kept": 2, "clips": 4, "share_kept": 0.5}
    # words: a red square | a red circle moves -> 7 tokens, 5 distinct, bigrams {a red, red square, red circle,
    # circle moves} -> 4 distinct
    assert stats["diversity"]["tokens"] == 7
    assert stats["diversity"]["distinct_tokens_per_1k"] == pytest.approx(1000 * 5 / 7)
    assert stats["diversity"]["distinct_bigrams_per_1k"] == pytest.approx(1000 * 4 / 7)
    assert stats["quality"] == {"mean_score": pytest.approx(0.3), "verifier_pass_rate": 0.5}
    empty = trinity([], [], clips=3)
    assert empty["quantity"]["share_kept"] == 0 and empty["diversity"]["distinct_tokens_per_1k"] is None
    assert empty["quality"] == {"mean_score": None, "verifier_pass_rate": None}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--label_hint", "true"], "label_hint needs the task"),
        (["--cycle_init", "latest"], "cycle_init must be"),
        (["--min_score", "2"], "min_score"),
        (["--num_cycles", "0"], "num_cycles"),
    ],
)
def test_bad_settings_are_refused_before_any_work(flags, message, tmp_path):
    from vstar.configs import parse_configs
    from vstar.flywheel import FlywheelConfig
    from vstar.train.sft import VStarSFTConfig

    with pytest.raises(ConfigError, match=message):
        parse_configs((FlywheelConfig, VStarSFTConfig), ["--output_dir", str(tmp_path), "--task", "", *flags])


def test_missing_inputs_name_the_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["flywheel", "--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "scorer is not set: pass --scorer" in capsys.readouterr().err
