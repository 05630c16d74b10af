"""`vstar train-scorer`: real contrastive training of tiny CLIP / SigLIP / X-CLIP scorers on clip-caption pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import load_dataset

from vstar.cli import main as cli_main
from vstar.errors import ConfigError, InputError
from vstar.scoring import VideoTextScorer
from vstar.testing.scorers import build_colour_pairs, build_tiny_scorer, colour_caption
from vstar.train.scorer import ScorerTrainConfig, load_pairs, recall_at_1, train_scorer

COLOURS = ("red", "blue", "green", "yellow")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return build_colour_pairs(
        tmp_path_factory.mktemp("pairs") / "pairs", num_train=96, num_test=32, colors=COLOURS, name_direction=False
    )


@pytest.fixture(scope="module")
def noisy_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noisy")
    return build_colour_pairs(root / "noisy", num_train=64, colors=COLOURS, swap_fraction=0.5, name_direction=False)


@pytest.fixture(scope="module")
def seed_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seed")
    return build_colour_pairs(root / "seed", num_train=16, colors=COLOURS, name_direction=False, seed=9)


def _base(tmp_path: Path, architecture: str = "clip") -> Path:
    corpus = [colour_caption(c) for c in COLOURS]
    return build_tiny_scorer(tmp_path / f"base-{architecture}", architecture, corpus=corpus)


def test_cli_training_teaches_the_scorer_and_saves_what_select_loads(pairs, tmp_path):
    base = _base(tmp_path)
    before = VideoTextScorer.from_pretrained(base)
    held_out = load_pairs(before, str(pairs), "test", "description")
    untrained = recall_at_1(before, held_out)
    out = tmp_path / "trained"
    cli_main(
        ["train-scorer", "--pairs", str(pairs), "--model", str(base), "--output", str(out), "--max_steps", "120",
         "--batch_size", "16", "--learning_rate", "2e-3", "--eval_split", "test"]
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 120 and metrics["eval_pairs"] == 32
    assert metrics["recall_at_1"] >= 0.9 > untrained + 0.3
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(log) == 120 and log[-1]["loss"] < log[0]["loss"] / 4
    # The saved scorer reloads with its settings and scores as it did at the end of training.
    trained = VideoTextScorer.from_pretrained(out)
    assert trained.num_frames == before.num_frames
    assert recall_at_1(trained, held_out) == metrics["recall_at_1"]
    saved = json.loads((out / "vstar_scorer.json").read_text())
    assert saved["loss"] == "infonce" and abs(saved["log_scale"] - 4.6) < 0.5
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 120


@pytest.mark.parametrize("architecture", ["siglip", "x_clip"])
def test_siglip_and_x_clip_train_and_reload(architecture, pairs, tmp_path):
    metrics = train_scorer(
        ScorerTrainConfig(
            pairs=str(pairs), model=str(_base(tmp_path, architecture)), output=str(tmp_path / "out"),
            loss="angular_margin", max_steps=12, batch_size=16, learning_rate=2e-3,
        )
    )  # fmt: skip
    log = [json.loads(line) for line in (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] and metrics["steps"] == 12
    scorer = VideoTextScorer.from_pretrained(tmp_path / "out")
    frames = torch.randint(0, 255, (scorer.num_frames, 32, 32, 3), dtype=torch.uint8).numpy()
    scores = scorer.score([frames], [["a red square", "a blue square"]])
    assert len(scores[0]) == 2 and all(-1 <= s <= 1 for s in scores[0])


def test_meta_weighting_logs_and_saves_per_sample_weights(noisy_pairs, seed_pairs, tmp_path):
    out = tmp_path / "meta"
    metrics = train_scorer(
        ScorerTrainConfig(
            pairs=str(noisy_pairs), model=str(_base(tmp_path)), output=str(out), loss="angular_margin",
            sample_weighting="meta", meta_dataset=str(seed_pairs), max_steps=6, batch_size=16, meta_batch_size=8,
        )
    )  # fmt: skip
    assert metrics["steps"] == 6
    weights = load_dataset("parquet", data_files=str(out / "sample_weights.parquet"), split="train")
    assert len(weights) == 6 * 16 and sorted(set(weights["step"])) == list(range(1, 7))
    assert set(weights["id"]) <= set(load_dataset(str(noisy_pairs), split="train")["id"])
    # Normalised over the batch: each step's weights times the batch size average 1, and they differ by loss.
    for step in range(1, 7):
        step_weights = [w for s, w in zip(weights["step"], weights["weight"], strict=True) if s == step]
        assert sum(step_weights) / len(step_weights) == pytest.approx(1.0, abs=1e-4)
    assert max(weights["weight"]) > min(weights["weight"])
    assert all(0 < w < 1 for w in weights["raw_weight"])
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert all(0 < entry["raw_weight_mean"] < 1 and entry["meta_loss"] > 0 for entry in log)


def test_bad_settings_and_inputs_say_what_to_fix(pairs, tmp_path):
    with pytest.raises(ConfigError, match="needs --meta_dataset"):
        ScorerTrainConfig(pairs=str(pairs), model="m", sample_weighting="meta")
    with pytest.raises(ConfigError, match="loss must be `infonce` or `angular_margin`"):
        ScorerTrainConfig(loss="arcface")
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        ScorerTrainConfig(batch_size=1)
    with pytest.raises(InputError, match="has no column caption .*--text_column"):
        train_scorer(
            ScorerTrainConfig(pairs=str(pairs), model=str(_base(tmp_path)), text_column="caption", max_steps=1)
        )
