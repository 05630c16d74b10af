"""Early stopping on the task's primary metric or the yield, the best cycle, and the paper's final retrain."""

import json

import pytest
from loop_helpers import small_cycle_config, training_config

from vstar.cycle import CycleRunner
from vstar.io import load_split


def _runner(tmp_path, shapes_dir, **overrides) -> CycleRunner:
    return CycleRunner(small_cycle_config(tmp_path, shapes_dir, **overrides), training_config(model_name_or_path="m"))


def _history(values, key="accuracy", yields=None):
    return [
        {"cycle": c, "heldout": {key: v}, "yield": None if c == 0 else (yields or {}).get(c)}
        for c, v in enumerate(values)
    ]


@pytest.mark.parametrize(
    "values, patience, stops",
    [
        ([0.4, 0.5, 0.6], 1, False),  # still improving
        ([0.4, 0.6, 0.55], 1, True),  # the last cycle fell back
        ([0.4, 0.6, 0.55, 0.58], 2, True),  # two cycles without beating 0.6
        ([0.4, 0.6, 0.55, 0.61], 2, False),
    ],
)
def test_stop_on_the_primary_metric(tmp_path, shapes_dir, values, patience, stops):
    runner = _runner(tmp_path, shapes_dir, early_stop_patience=patience)
    assert runner.selection_metric == "accuracy"
    assert runner._stop_early(_history(values)) is stops


def test_min_delta_and_best_cycle(tmp_path, shapes_dir):
    runner = _runner(tmp_path, shapes_dir, early_stop_patience=1, early_stop_min_delta=0.05)
    history = _history([0.4, 0.6, 0.62])
    assert runner._stop_early(history)  # +0.02 is less than the smallest improvement that counts
    assert runner.best_cycle(history) == {"cycle": 2, "metric": "accuracy", "value": 0.62}
    # ties go to the earlier cycle; cycle 0 (the starting model) is never the best trained cycle
    assert runner.best_cycle(_history([0.9, 0.5, 0.5]))["cycle"] == 1


def test_quality_follows_spearman_and_yield_can_be_chosen(tmp_path, shapes_dir):
    quality = CycleRunner(
        small_cycle_config(tmp_path / "q", shapes_dir, task="action_quality", early_stop_patience=1),
        training_config(model_name_or_path="m"),
    )
    assert quality.selection_metric == "spearman"
    assert quality._stop_early(_history([0.1, 0.3, 0.2], key="spearman"))
    assert quality.best_cycle(_history([0.1, 0.3, 0.2], key="spearman"))["cycle"] == 1

    by_yield = _runner(tmp_path / "y", shapes_dir, early_stop_metric="yield", early_stop_patience=1)
    history = _history([0.1, 0.9, 0.95], yields={1: 0.7, 2: 0.6})
    assert by_yield._stop_early(history)  # held-out accuracy rose, but the yield fell
    assert by_yield.best_cycle(history) == {"cycle": 1, "metric": "yield", "value": 0.7}


@pytest.mark.slow
def test_base_init_two_cycles_final_retrain_and_best_tag(hub_env, warm_models, shapes_dir, tmp_path):
    config = small_cycle_config(
        tmp_path,
        shapes_dir,
        num_cycles=2,
        cycle_init="base",
        final_retrain=True,
        source_limit=16,
        hub_repo="vstar-org/selection",
    )
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(tmp_path / "train"))
    history = CycleRunner(config, train).run()
    assert [h["cycle"] for h in history] == [0, 1, 2]

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    best = metrics["best"]
    accuracies = {c["cycle"]: c["heldout"]["accuracy"] for c in metrics["cycles"]}
    assert best["metric"] == "accuracy" and best["value"] == max(accuracies[1], accuracies[2])
    assert all("num_examples" in c["heldout"] for c in metrics["cycles"])

    state = json.loads((tmp_path / "state.json").read_text())["stages"]
    # Every cycle retrained from the base model: neither cycle started from an adapter.
    assert state["cycle-2/train"]["global_step"] > 0

    final = metrics["final"]
    dataset = load_split(tmp_path / f"cycle-{best['cycle']}" / "dataset", "train")
    direct = sum(not r for r in dataset["rationalized"])
    assert final["from_cycle"] == best["cycle"] and final["train_rows"] == direct
    assert final["dropped_rationalized"] == len(dataset) - direct
    assert not any(load_split(tmp_path / "final" / "dataset", "train")["rationalized"])
    assert (tmp_path / "final" / "model" / "adapter_model.safetensors").exists()
    assert final["heldout"]["num_examples"] == 8

    for repo, repo_type in (("vstar-org/selection", "model"), ("vstar-org/selection", "dataset")):
        tags = {t.name: t.target_commit for t in hub_env.api.list_repo_refs(repo, repo_type=repo_type).tags}
        assert tags["best"] == tags[f"cycle-{best['cycle']}"]
