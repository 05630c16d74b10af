"""The loop end to end on tiny models: one cycle per architecture, and kill/resume at any stage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loop_helpers import SEED_CLIPS, small_cycle_config, training_config

from vstar.configs import CycleConfig
from vstar.cycle import CycleRunner
from vstar.io import load_split
from vstar.train.sft import VStarSFTConfig


def cycle_configs(run_dir: Path, shapes_dir: Path, model: Path, **overrides) -> tuple[CycleConfig, VStarSFTConfig]:
    cycle = small_cycle_config(run_dir, shapes_dir, **{"generation_chunk_size": 8, **overrides})
    return cycle, training_config(model_name_or_path=str(model), output_dir=str(run_dir / "train"))


def count_rows(run_dir: Path, cycle: int = 1) -> dict[str, int]:
    dataset = run_dir / f"cycle-{cycle}" / "dataset"
    return {config: len(load_split(dataset, "train", config)) for config in ("default", "rejected")}


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
def test_one_cycle_end_to_end(arch, warm_models, shapes_dir, tmp_path):
    from datasets import load_dataset
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    cycle_config, train_config = cycle_configs(tmp_path, shapes_dir, warm_models[arch])
    history = CycleRunner(cycle_config, train_config).run()

    assert [h["cycle"] for h in history] == [0, 1]
    entry = history[1]
    assert entry["generated"] == 24
    # Both ways into the data are exercised: direct passes and hinted retries of failures that then pass.
    assert entry["accepted_direct"] > 0 and entry["accepted_rationalized"] > 0
    assert entry["yield"] == pytest.approx((entry["accepted_direct"] + entry["accepted_rationalized"]) / 24)
    assert 0 <= entry["heldout_accuracy"] <= 1 and entry["train_steps"] > 0

    dataset_dir = tmp_path / "cycle-1" / "dataset"
    accepted = load_dataset(str(dataset_dir), split="train")
    rejected = load_dataset(str(dataset_dir), "rejected", split="train")
    assert len(accepted) == entry["accepted_direct"] + entry["accepted_rationalized"]
    assert len(rejected) == entry["rejected"]
    assert all(row["verification"]["passed"] for row in accepted)
    assert not any(row["verification"]["passed"] for row in rejected)
    for row in accepted:
        user_text = row["messages"][0]["content"][1]["text"]
        # The stored question never carries the hint, even for rationalized answers.
        assert "\nAnswer:" not in user_text and row["question"] in user_text
        assert row["messages"][1]["content"][0]["text"] == row["answer"]
        assert json.loads(row["label"])["label"] in row["answer"]
    assert sum(row["rationalized"] for row in accepted) == entry["accepted_rationalized"]
    assert "configs:" in (dataset_dir / "README.md").read_text()

    model_dir = tmp_path / "cycle-1" / "model"
    base = AutoModelForImageTextToText.from_pretrained(warm_models[arch])
    adapted = PeftModel.from_pretrained(base, model_dir)
    # LoRA training moved the adapter away from its zero initialisation.
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    card = (model_dir / "README.md").read_text()
    assert "model-index" in card and "base_model:" in card
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["cycles"] == history
    assert (tmp_path / "cycles.png").stat().st_size > 1000


def _launch(run_dir: Path, shapes_dir: Path, model: Path, log: Path) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "vstar.cli", "cycle",
        "--task", "shapes", "--source_dataset", str(shapes_dir), "--source_offset", str(SEED_CLIPS),
        "--source_limit", "24", "--eval_limit", "8", "--run_dir", str(run_dir), "--num_cycles", "1",
        "--cycle_init", "previous", "--generation_batch_size", "4", "--generation_chunk_size", "4",
        "--max_new_tokens", "24", "--model_name_or_path", str(model), "--output_dir", str(run_dir / "train"),
        "--finetuning", "lora", "--lora_target", "all", "--lora_r", "8", "--lora_alpha", "16",
        "--learning_rate", "2e-3", "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
        "--activation_checkpointing", "false", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
        "--disable_tqdm", "true", "--seed", "0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _kill_when(process: subprocess.Popen, condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run finished before the kill point"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_during_generation_and_training_then_resume(warm_models, shapes_dir, tmp_path):
    model = warm_models["qwen2_5_vl"]
    reference = tmp_path / "reference"
    assert _launch(reference, shapes_dir, model, tmp_path / "reference.log").wait() == 0, (
        tmp_path / "reference.log"
    ).read_text()[-3000:]

    run = tmp_path / "interrupted"
    generations = run / "cycle-1" / "generations"
    # Killed after the first chunk of direct answers is on disk, before the pass ends.
    _kill_when(
        _launch(run, shapes_dir, model, tmp_path / "a.log"), lambda: len(list(generations.glob("direct-*"))) >= 2
    )
    assert not (run / "cycle-1" / "dataset").exists()
    # Killed while the adapter is being trained, once its first checkpoint is complete (the Trainer writes
    # trainer_state.json last); a later checkpoint may be half-written, and must then be passed over.
    partial = run / "cycle-1" / "model.partial"
    _kill_when(
        _launch(run, shapes_dir, model, tmp_path / "b.log"),
        lambda: any(partial.glob("checkpoint-*/trainer_state.json")),
    )
    assert not (run / "cycle-1" / "model").exists()
    assert _launch(run, shapes_dir, model, tmp_path / "c.log").wait() == 0, (tmp_path / "c.log").read_text()[-3000:]

    assert count_rows(run) == count_rows(reference)
    ref_state = json.loads((reference / "state.json").read_text())["stages"]
    run_state = json.loads((run / "state.json").read_text())["stages"]
    assert run_state["cycle-1/assemble"] == ref_state["cycle-1/assemble"]
    assert len(list(generations.glob("direct-*.parquet"))) == 6  # 24 requests in chunks of 4, none duplicated
    assert (
        json.loads((run / "metrics.json").read_text())["cycles"][1]["train_steps"]
        == ref_state["cycle-1/train"]["global_step"]
    )
    # Training went on from its checkpoint instead of starting over; the model directory holds no checkpoints.
    assert run_state["cycle-1/train"]["resumed_from"].startswith("checkpoint-")
    assert ref_state["cycle-1/train"]["resumed_from"] is None
    assert not list((run / "cycle-1" / "model").glob("checkpoint-*"))
    assert (run / "cycle-1" / "model" / "adapter_model.safetensors").exists()
