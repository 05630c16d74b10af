"""Which checkpoint a killed training run resumes from, and that a kill at any instant of a cycle's training stage
leaves a state the next run completes (real tiny-model training, leftovers built on disk as a kill leaves them)."""

import json
import shutil
from pathlib import Path

import pytest
from loop_helpers import small_cycle_config, training_config
from safetensors.torch import load_file

from vstar.train.sft import incomplete_reason, latest_checkpoint, remove_incomplete_checkpoints, train

ADAPTER = "adapter_model.safetensors"


def write_checkpoint(path: Path, step: int, files=("trainer_state.json", ADAPTER, "optimizer.pt")) -> Path:
    path.mkdir(parents=True)
    for name in files:
        content = json.dumps({"global_step": step}) if name == "trainer_state.json" else "weights"
        (path / name).write_text(content)
    return path


def test_newest_complete_checkpoint_is_chosen(tmp_path):
    assert latest_checkpoint(tmp_path / "missing", "last") is None
    assert latest_checkpoint(tmp_path, "last") is None
    for step in (2, 4, 10):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    # checkpoint-12 was being written when the run was killed; checkpoint-10 sorts after checkpoint-4 by number.
    write_checkpoint(tmp_path / "checkpoint-12", 12, files=(ADAPTER,))
    assert latest_checkpoint(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')  # cut short mid-write
    assert latest_checkpoint(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    # An explicit path, or none, is passed through.
    assert latest_checkpoint(tmp_path, str(tmp_path / "checkpoint-2")) == str(tmp_path / "checkpoint-2")
    assert latest_checkpoint(tmp_path, None) is None


def test_a_checkpoint_is_complete_only_with_its_weights_and_state(tmp_path):
    # What deleting a checkpoint folder can leave, in whatever order the files go.
    only_state = write_checkpoint(tmp_path / "checkpoint-20", 20, files=("trainer_state.json",))
    no_optimizer = write_checkpoint(tmp_path / "checkpoint-18", 18, files=("trainer_state.json", ADAPTER))
    sharded = write_checkpoint(tmp_path / "checkpoint-16", 16, files=("trainer_state.json", "optimizer.pt"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_text("shard")
    whole = write_checkpoint(tmp_path / "checkpoint-14", 14)
    assert incomplete_reason(only_state) == "no weights"
    assert incomplete_reason(no_optimizer) == "no optimizer state"
    assert incomplete_reason(no_optimizer, save_only_model=True) is None
    assert incomplete_reason(sharded) == "no weights"  # one shard of two
    assert incomplete_reason(whole) is None
    assert latest_checkpoint(tmp_path, "last") == str(whole)
    (sharded / "model-00002-of-00002.safetensors").write_text("shard")
    assert latest_checkpoint(tmp_path, "last") == str(sharded)

    (tmp_path / ".removing-checkpoint-12").mkdir()  # a kill during an earlier removal
    assert sorted(remove_incomplete_checkpoints(tmp_path)) == ["checkpoint-18", "checkpoint-20"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-14", "checkpoint-16"]


# -- the training stage of a cycle, killed at every step -------------------------------------------------------

STEPS, SAVE_EVERY = 4, 2


@pytest.fixture(scope="module")
def stage(tiny_model_dirs, shapes_dir, tmp_path_factory):
    """A cycle runner's training settings, a small instruction dataset, and the partial directory a finished
    `train` leaves just before the stage's cleanup (checkpoints 2 and 4 plus the final adapter)."""
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task

    root = tmp_path_factory.mktemp("train-stage")
    dataset = write_seed_dataset(root / "data", seed_rows(shapes_dir, 8, get_task("shapes"), seed=0))
    settings = dict(
        model_name_or_path=str(tiny_model_dirs["qwen2_5_vl"]),
        output_dir=str(root / "unused"),
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=SAVE_EVERY,
        per_device_train_batch_size=4,
        lora_target="language",
    )
    partial = root / "model.partial"
    # The settings `CycleRunner._train` gives the stage (the cycle's dataset, the starting model, resume).
    train(
        training_config(
            **{**settings, "output_dir": str(partial), "dataset": str(dataset)}, resume_from_checkpoint="last"
        )
    )
    assert {p.name for p in partial.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    return {"settings": settings, "dataset": str(dataset), "partial": partial, "shapes": shapes_dir}


def runner_for(stage, run_dir: Path):
    from vstar.cycle import CycleRunner

    return CycleRunner(small_cycle_config(run_dir, stage["shapes"]), training_config(**stage["settings"]))


def run_stage(stage, run_dir: Path):
    runner = runner_for(stage, run_dir)
    output = run_dir / "cycle-1" / "model"
    summary = runner._train("cycle-1/train", stage["dataset"], output, runner.model_ref(0))
    return runner, output, summary


def leftover(stage, tmp_path: Path) -> tuple[Path, Path]:
    """A run directory whose cycle-1 holds a copy of the finished partial directory."""
    run_dir = tmp_path / "run"
    partial = run_dir / "cycle-1" / "model.partial"
    shutil.copytree(stage["partial"], partial)
    return run_dir, partial


def tensors(path: Path) -> dict:
    return load_file(str(path / ADAPTER))


def assert_same_adapter(a: Path, b: Path) -> None:
    left, right = tensors(a), tensors(b)
    assert left.keys() == right.keys()
    assert all((left[k] == right[k]).all() for k in left), "adapters differ"


def assert_finished(run_dir: Path, output: Path, stage) -> None:
    assert not output.with_name("model.partial").exists()
    assert not any(p.name.startswith(".removing") for p in output.parent.iterdir())
    assert not list(output.glob("checkpoint-*")) and not list(output.glob(".removing-*"))
    assert (output / "train_summary.json").is_file() and (output / "adapter_config.json").is_file()
    assert_same_adapter(output, stage["partial"])
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["cycle-1/train"]["output_dir"] == str(output)


def test_killed_while_removing_checkpoints(stage, tmp_path):
    run_dir, partial = leftover(stage, tmp_path)
    # The wedge: a checkpoint holding only trainer_state.json, another hidden half way through removal.
    for name in list((partial / "checkpoint-4").iterdir()):
        if name.name != "trainer_state.json":
            name.unlink() if name.is_file() else shutil.rmtree(name)
    (partial / "checkpoint-2").rename(partial / ".removing-checkpoint-2")
    _, output, summary = run_stage(stage, run_dir)
    assert summary["global_step"] == STEPS and summary["resumed_from"] is None  # the finished training, not redone
    assert_finished(run_dir, output, stage)


def test_killed_while_replacing_the_model_directory(stage, tmp_path):
    run_dir, partial = leftover(stage, tmp_path)
    for checkpoint in partial.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    # An older model directory hidden for removal, half deleted, and one half deleted under its own name.
    stale = run_dir / "cycle-1" / ".removing-model"
    shutil.copytree(partial, stale)
    (stale / ADAPTER).unlink()
    shutil.copytree(partial, run_dir / "cycle-1" / "model")
    (run_dir / "cycle-1" / "model" / "train_summary.json").unlink()
    _, output, _ = run_stage(stage, run_dir)
    assert_finished(run_dir, output, stage)


def test_killed_after_the_rename_before_the_state_was_saved(stage, tmp_path):
    run_dir, partial = leftover(stage, tmp_path)
    for checkpoint in partial.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    partial.rename(partial.with_name("model"))
    before = (partial.with_name("model") / ADAPTER).stat().st_mtime_ns
    _, output, _ = run_stage(stage, run_dir)
    assert_finished(run_dir, output, stage)
    assert (output / ADAPTER).stat().st_mtime_ns == before  # recorded as it was, not trained again


def test_killed_while_saving_the_final_model_resumes_from_the_last_complete_checkpoint(stage, tmp_path):
    run_dir, partial = leftover(stage, tmp_path)
    for name in ("train_summary.json", ADAPTER, "adapter_config.json"):
        (partial / name).unlink()
    (partial / "checkpoint-4" / "optimizer.pt").unlink()  # removed half way (the Trainer's own rotation)
    _, output, summary = run_stage(stage, run_dir)
    assert summary["resumed_from"] == "checkpoint-2"
    # Seeded, and resumed with the optimizer and RNG states: the same adapter as the uninterrupted training.
    assert_finished(run_dir, output, stage)


def test_killed_before_the_first_checkpoint_restarts_from_the_same_start(stage, tmp_path):
    run_dir, partial = leftover(stage, tmp_path)
    shutil.rmtree(partial)
    partial.mkdir()
    write_checkpoint(partial / "checkpoint-2", 2, files=("trainer_state.json",))  # cut short by the kill
    (partial / "runs").mkdir()
    _, output, summary = run_stage(stage, run_dir)
    assert summary["resumed_from"] is None
    assert_finished(run_dir, output, stage)  # bit for bit the adapter of the first training: same seed, same start
    # A finished stage is not run again.
    assert run_stage(stage, run_dir)[2] == json.loads((run_dir / "state.json").read_text())["stages"]["cycle-1/train"]
