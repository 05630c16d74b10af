"""`vstar eval` end to end: the warm-started tiny model on the shapes test split, results.json audited."""

import json
import os
import subprocess
import sys

import pytest

from vstar.cli import main


def test_eval_writes_auditable_results(warm_models, shapes_dir, tmp_path):
    output = tmp_path / "results.json"
    main(["eval", "--model", str(warm_models["qwen2_5_vl"]), "--dataset", str(shapes_dir), "--split", "test",
          "--task", "shapes", "--output", str(output), "--limit", "8", "--max_new_tokens", "24"])  # fmt: skip
    results = json.loads(output.read_text())
    metrics = results["metrics"]
    assert metrics["num_examples"] == 8 and 0 <= metrics["accuracy"] <= 1
    assert {"per_class_accuracy", "confusions", "verifier_yield", "parse_rate"} <= set(metrics)
    assert results["model"] == str(warm_models["qwen2_5_vl"]) and results["dataset"] == str(shapes_dir)
    assert results["generation"]["max_new_tokens"] == 24
    predictions = results["predictions"]
    assert len(predictions) == 8
    # Every number can be recomputed from the per-example predictions.
    assert sum(p["correct"] for p in predictions) / 8 == metrics["accuracy"]
    for p in predictions:
        assert p["answer"] and "label" in p["label"] and "label" in p["prediction"]


@pytest.mark.slow
def test_eval_under_torchrun_matches_one_process(warm_models, shapes_dir, tmp_path):
    args = ["eval", "--model", str(warm_models["qwen2_5_vl"]), "--dataset", str(shapes_dir), "--split", "test",
            "--task", "shapes", "--limit", "8", "--max_new_tokens", "24", "--chunk_size", "2"]  # fmt: skip
    main([*args, "--output", str(tmp_path / "one.json")])
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "vstar.cli", *args, "--output", str(tmp_path / "two.json")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, (launched.stdout + launched.stderr)[-3000:]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert two["predictions"] == one["predictions"] and two["metrics"] == one["metrics"]
    # Both processes answered: chunk files of rank 0 and rank 1; the metrics were printed once.
    ranks = {p.name.split("-")[1] for p in (tmp_path / "two.generations").glob("eval-rank*.parquet")}
    assert ranks == {"rank000", "rank001"}
    assert launched.stdout.count('"accuracy"') == 1
