"""`vstar eval` end to end: the warm-started tiny model on the shapes test split, results.json audited."""

import json

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
