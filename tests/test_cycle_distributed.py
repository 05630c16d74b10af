"""The loop under `torchrun` with 2 CPU processes (gloo): same data as one process, DDP training, one writer."""

import json
import os
import subprocess
import sys

import pytest
from test_cycle import cycle_configs

from vstar.configs import save_config
from vstar.cycle import CycleRunner
from vstar.io import load_split


def dataset_rows(run_dir, config: str) -> list[dict]:
    return sorted(load_split(run_dir / "cycle-1" / "dataset", "train", config).to_list(), key=lambda r: r["id"])


@pytest.mark.slow
def test_two_process_cycle_matches_one_process_data(warm_models, shapes_dir, tmp_path):
    model = warm_models["qwen2_5_vl"]
    single_dir, launched_dir = tmp_path / "one-process", tmp_path / "two-processes"

    cycle_config, train_config = cycle_configs(single_dir, shapes_dir, model, generation_chunk_size=4)
    single = CycleRunner(cycle_config, train_config).run()

    cycle_config, train_config = cycle_configs(launched_dir, shapes_dir, model, generation_chunk_size=4)
    # The resolved settings a run saves are a recipe that reproduces it.
    recipe_path = save_config(tmp_path / "config.yaml", cycle_config, train_config)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vstar.cli", "cycle", "--config", str(recipe_path),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    # Generation was split over the two ranks, and the merged, verified data is the one-process run's.
    chunks = sorted(p.name.split("-")[1] for p in (launched_dir / "cycle-1" / "generations").glob("direct-*.parquet"))
    assert set(chunks) == {"rank000", "rank001"}
    for config in ("default", "rejected"):
        assert dataset_rows(launched_dir, config) == dataset_rows(single_dir, config)

    # Training ran as one DDP job: each step saw a batch per process, so it took fewer steps than one process.
    state = json.loads((launched_dir / "state.json").read_text())["stages"]
    rows = state["cycle-1/assemble"]["accepted"]
    batch = train_config.per_device_train_batch_size
    assert state["cycle-1/train"]["global_step"] == -(-rows // (2 * batch))
    assert single[1]["train_steps"] == -(-rows // batch)
    assert (launched_dir / "cycle-1" / "model" / "adapter_model.safetensors").exists()
    assert not (launched_dir / "cycle-1" / "model.partial").exists()

    # The main process alone wrote the run's files; the table was printed once.
    history = json.loads((launched_dir / "metrics.json").read_text())["cycles"]
    assert [h["cycle"] for h in history] == [0, 1]
    assert history[0]["heldout_accuracy"] == single[0]["heldout_accuracy"]
    results = json.loads((launched_dir / "cycle-1" / "eval" / "results.json").read_text())
    assert len(results["predictions"]) == cycle_config.eval_limit
    assert result.stdout.count("Video-STaR cycles") == 1
