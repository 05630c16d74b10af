"""`vstar cycle` with the vllm backend under `torchrun` with 2 CPU processes (gloo): one engine per process (data
parallel, `external_launcher`), the engines shut down before training, then one DDP training job in the same launch.

vLLM needs a GPU, so each process runs the stand-in engine of `vstar.testing.fake_vllm`; the command line, the
cycle, the backend and the training around it are real. The stand-in answers with the prompt's user text: a direct
answer states no conclusion and is rejected, a hinted retry carries "Answer: <label>." and is accepted.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cycle import cycle_configs

from vstar.configs import save_config

# `vstar cycle` in a launched process, after the stand-in engine is installed; each process then reports its
# engines' records and the training log's records with their times.
LAUNCHED = textwrap.dedent(
    """
    import json, logging, os, sys

    import torch

    from vstar.testing import fake_vllm

    torch.set_num_threads(1)
    fake_vllm.install()
    from vstar.cli import main

    trainer_log = []


    class Stamps(logging.Handler):
        def emit(self, record):
            trainer_log.append({"at": record.created, "message": record.getMessage()})


    logging.getLogger("transformers.trainer").addHandler(Stamps())
    recipe, report_dir = sys.argv[1], sys.argv[2]
    main(["cycle", "--config", recipe])
    report = {"engines": fake_vllm.engine_records(), "trainer_log": trainer_log}
    with open(os.path.join(report_dir, f"report-{os.environ['RANK']}.json"), "w") as f:
        json.dump(report, f)
    """
)


def launch(script: Path, recipe: Path, report_dir: Path) -> tuple[list[dict], str]:
    """Run the script under `torchrun` with 2 processes; returns each rank's report and the launch's output."""
    report_dir.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(recipe), str(report_dir),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return [json.loads((report_dir / f"report-{rank}.json").read_text()) for rank in (0, 1)], output


def chunk_keys(directory: Path, name: str) -> dict[str, list[tuple[str, str]]]:
    """The `(id, attempt)` of every answer in a pass's chunk files, by the shard that wrote them (`rank000`, ...)."""
    from datasets import load_dataset

    keys: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(directory.glob(f"{name}-rank*.parquet")):
        rows = load_dataset("parquet", data_files=str(path), split="train")
        keys.setdefault(path.name.split("-")[1], []).extend((r["id"], r["attempt"]) for r in rows)
    return keys


def files_with_times(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}


@pytest.mark.slow
def test_vllm_cycle_under_torchrun_two_engines_then_ddp_training(tiny_model_dirs, shapes_dir, tmp_path):
    # The engine's answers do not depend on the weights: the untrained tiny model is enough to train on them.
    model = tiny_model_dirs["qwen2_5_vl"]
    run_dir = tmp_path / "run"
    cycle_config, train_config = cycle_configs(
        run_dir, shapes_dir, model, generation_backend="vllm", generation_chunk_size=4
    )
    # The Trainer's own log on every process: its records mark when training began, and its batch size.
    train_config.log_level, train_config.log_level_replica = "info", "info"
    recipe = save_config(tmp_path / "config.yaml", cycle_config, train_config)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    seed = cycle_config.generation_settings(train_config.num_frames, train_config.video_fps, train_config.seed).seed

    reports, output = launch(script, recipe, tmp_path / "first")

    # Every pass was split over the two engines: each wrote its own chunks, disjoint, together every request.
    generations = run_dir / "cycle-1" / "generations"
    clips = cycle_config.source_limit
    passes = {
        "direct": chunk_keys(generations, "direct"),
        "rationalized": chunk_keys(generations, "rationalized"),
        "eval-0": chunk_keys(run_dir / "cycle-0" / "eval", "eval"),
        "eval-1": chunk_keys(run_dir / "cycle-1" / "eval", "eval"),
    }
    expected = {"direct": clips, "rationalized": clips, "eval-0": cycle_config.eval_limit}
    expected["eval-1"] = expected["eval-0"]
    for name, shards in passes.items():
        assert sorted(shards) == ["rank000", "rank001"], name
        assert not set(shards["rank000"]) & set(shards["rank001"]), name
        keys = shards["rank000"] + shards["rank001"]
        assert len(set(keys)) == len(keys) == expected[name], name

    # What the cycle made of the stand-in's answers: no direct answer concludes anything, every hinted one names
    # its label; all of them were assembled on the main process and trained on.
    state = json.loads((run_dir / "state.json").read_text())["stages"]
    stats = state["cycle-1/assemble"]
    assert (stats["accepted_direct"], stats["accepted_rationalized"]) == (0, clips)
    assert stats["rejected_by_reason"] == {"direct/label:no_conclusion": clips}

    for rank, report in enumerate(reports):
        # Two engines per process: the starting model's (cycle-0 evaluation, both generation passes) and, after
        # training, the trained adapter's (cycle-1 evaluation) on the same process group.
        before, after = report["engines"]
        for engine in (before, after):
            assert engine["kwargs"]["distributed_executor_backend"] == "external_launcher"
            assert engine["kwargs"]["seed"] == seed + rank
            assert engine["kwargs"]["tensor_parallel_size"] == 1
            assert engine["groups"]["world"]["ranks"] == [0, 1]
            assert engine["groups"]["tensor_parallel"]["ranks"] == [rank]
        assert "enable_lora" not in before["kwargs"] and not before["lora_paths"]
        assert after["kwargs"]["enable_lora"] and after["lora_paths"] == [str(run_dir / "cycle-1" / "model")]
        # Each engine answered exactly the requests of its rank's chunk files.
        shard = f"rank{rank:03d}"
        mine = sum(len(passes[name][shard]) for name in ("eval-0", "direct", "rationalized"))
        assert len(before["prompts"]) == mine
        assert len(after["prompts"]) == len(passes["eval-1"][shard])

        # The first engine was shut down and its groups destroyed before the Trainer logged anything, with the
        # launch's group left for training; the second was built only after training.
        training = [r["at"] for r in report["trainer_log"]]
        assert any(r["message"] == "***** Running training *****" for r in report["trainer_log"])
        assert before["shut_down_at"] is not None
        teardown = [before["shut_down_at"]] + [
            before["groups"][g]["destroyed_at"] for g in ("world", "tensor_parallel")
        ]
        assert max(teardown) < min(training), (teardown, min(training))
        assert all(before["groups"][g]["launch_group_alive"] for g in ("world", "tensor_parallel"))
        assert after["built_at"] > max(training)
        # The last evaluation's engine is shut down when the run ends, while the launch's group is alive.
        assert after["shut_down_at"] is not None
        assert all(after["groups"][g]["launch_group_alive"] for g in ("world", "tensor_parallel"))

    # Training ran as one DDP job over both processes (a global batch of 2 x 8) and the adapter was written.
    batch = train_config.per_device_train_batch_size
    assert f"Total train batch size (w. parallel, distributed & accumulation) = {2 * batch}" in {
        r["message"].strip() for r in reports[0]["trainer_log"]
    }
    assert state["cycle-1/train"]["global_step"] == -(-stats["accepted"] // (2 * batch))
    assert (run_dir / "cycle-1" / "model" / "adapter_model.safetensors").exists()
    assert not (run_dir / "cycle-1" / "model.partial").exists()
    assert output.count("Video-STaR cycles") == 1

    # The same command again resumes a finished run: no engine starts, no chunk is written, the state stays.
    before_files = files_with_times(run_dir)
    reports, _ = launch(script, recipe, tmp_path / "second")
    assert [r["engines"] for r in reports] == [[], []]
    assert files_with_times(run_dir) == before_files
    assert json.loads((run_dir / "state.json").read_text())["stages"] == state
