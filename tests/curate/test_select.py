"""`vstar select`: the scorer picks the caption that names what a clip shows, and thresholds reject clips.

The clips are windows of real H.264 files of coloured squares; the scorer is a tiny CLIP that `vstar train-scorer`
teaches the colours in a few seconds (real training, nothing downloaded).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Value, load_dataset

from vstar.cli import main as cli_main
from vstar.curate.select import SelectConfig, select_captions
from vstar.io import split_file, write_parquet
from vstar.sources.shapes import render_clip
from vstar.synthesize.captions import caption_features
from vstar.testing.scorers import build_colour_pairs, build_tiny_scorer, colour_caption
from vstar.video import write_video

COLOURS = ("red", "blue", "green", "yellow")
FRAMES_PER_SEGMENT = 8  # 1 s at 8 fps

# What `vstar caption` writes (one row per clip and teacher), with the source's label column after its own.
CAPTION_FEATURES = caption_features({"label": Value("string")})


@pytest.fixture(scope="module")
def trained_scorer(tmp_path_factory) -> Path:
    """A tiny CLIP trained by `vstar train-scorer` (the CLI) on clean pairs naming the four colours."""
    root = tmp_path_factory.mktemp("scorer")
    pairs = build_colour_pairs(root / "pairs", num_train=160, colors=COLOURS, name_direction=False, seed=5)
    base = build_tiny_scorer(root / "base", "clip", corpus=[colour_caption(c) for c in COLOURS])
    cli_main(
        ["train-scorer", "--pairs", str(pairs), "--model", str(base), "--output", str(root / "trained"),
         "--max_steps", "120", "--batch_size", "16", "--learning_rate", "2e-3", "--torch_threads", "1"]
    )  # fmt: skip
    return root / "trained"


def _script(seed: int) -> list[list[str]]:
    """Colours of the segments of two videos: every colour appears, in different orders."""
    rng = np.random.default_rng(seed)
    return [list(rng.permutation(COLOURS)), list(rng.permutation(COLOURS))[:3]]


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A caption dataset: each clip is a 1 s window of a longer video, captioned by two teachers; the teacher
    whose caption names the clip's colour alternates, so always picking one teacher fails."""
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    rows, truth = [], {}
    for v, colours in enumerate(_script(1)):
        frames = np.concatenate([render_clip(rng, c, "right", 2, 32, FRAMES_PER_SEGMENT, 12) for c in colours])
        path = write_video(root / f"video{v}.mp4", frames, fps=8)
        for k, colour in enumerate(colours):
            clip_id = f"video{v}-{k}"
            wrong = COLOURS[(COLOURS.index(colour) + 1 + k % 3) % len(COLOURS)]
            right_teacher = "teacher-a" if (v + k) % 2 == 0 else "teacher-b"
            truth[clip_id] = right_teacher
            for teacher in ("teacher-a", "teacher-b"):
                text = colour_caption(colour if teacher == right_teacher else wrong)
                rows.append(
                    {
                        "id": clip_id,
                        "video": {"path": str(path), "bytes": None},
                        "start": float(k),
                        "end": float(k + 1),
                        "teacher": teacher,
                        "clip_descriptions": [{"start": float(k), "end": float(k + 1), "text": text}],
                        "summaries": [],
                        "description": text,
                        "label": colour,
                    }
                )
    write_parquet(root / split_file("train"), rows, CAPTION_FEATURES)
    return root, truth


def test_the_caption_naming_the_clip_wins_and_all_scores_are_kept(trained_scorer, captions, tmp_path):
    captions_dir, truth = captions
    out = select_captions(
        SelectConfig(captions=str(captions_dir), scorer=str(trained_scorer), output=str(tmp_path / "s"))
    )
    kept = load_dataset(str(out), split="train")
    assert sorted(kept["id"]) == sorted(truth)
    for row in kept:
        assert row["teacher"] == truth[row["id"]], row
        assert row["description"] == colour_caption(row["label"])
        by_teacher = {s["teacher"]: s["score"] for s in row["scores"]}
        assert set(by_teacher) == {"teacher-a", "teacher-b"}
        assert row["score"] == max(by_teacher.values())
        assert row["reason"] is None
    report = json.loads((out / "select_report.json").read_text())
    assert report["clips"] == {"train": {"kept": len(truth), "rejected": 0}}
    assert "rejected" not in (out / "README.md").read_text().split("---")[1]  # no rejected config when none is


def test_thresholds_move_clips_to_rejected_and_rescore_false_needs_no_model(
    trained_scorer, captions, tmp_path, monkeypatch
):
    captions_dir, truth = captions
    out = tmp_path / "selected"
    select_captions(SelectConfig(captions=str(captions_dir), scorer=str(trained_scorer), output=str(out)))
    best = sorted(load_dataset(str(out), split="train")["score"])
    threshold = (best[2] + best[3]) / 2  # three clips fall below it

    # Re-thresholding reads the stored scores: the scorer is never loaded (and need not exist).
    import vstar.scoring

    def no_model(*args, **kwargs):
        raise AssertionError("--rescore false loaded the scorer")

    monkeypatch.setattr(vstar.scoring.VideoTextScorer, "from_pretrained", no_model)
    cli_main(["select", "--output", str(out), "--rescore", "false", "--min_score", str(threshold)])
    kept = load_dataset(str(out), split="train")
    rejected = load_dataset(str(out), "rejected", split="train")
    assert len(kept) == len(truth) - 3 and len(rejected) == 3
    assert all(s >= threshold for s in kept["score"])
    assert all(r.startswith("best score") and f"< min_score {threshold:g}" in r for r in rejected["reason"])
    # The rejected clips keep their best caption and every score, so they can come back.
    assert all(len(s) == 2 for s in rejected["scores"])
    cli_main(["select", "--output", str(out), "--rescore", "false", "--min_score", "-1"])
    assert len(load_dataset(str(out), split="train")) == len(truth)
    assert not (out / "rejected").exists()


def test_an_undecodable_clip_is_rejected_and_the_rest_scored(trained_scorer, captions, tmp_path):
    captions_dir, truth = captions
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    source = load_dataset(str(captions_dir), split="train").to_list()
    source += [{**source[0], "id": "broken", "video": {"path": str(broken), "bytes": None}} for _ in range(2)]
    data = tmp_path / "captions"
    write_parquet(data / split_file("train"), source, CAPTION_FEATURES)
    out = select_captions(
        SelectConfig(captions=str(data), scorer=str(trained_scorer), output=str(tmp_path / "s"), batch_size=4)
    )
    rejected = load_dataset(str(out), "rejected", split="train")
    assert rejected["id"] == ["broken"]
    assert rejected[0]["reason"].startswith("undecodable video") and "broken.mp4" in rejected[0]["reason"]
    assert rejected[0]["score"] is None
    assert sorted(load_dataset(str(out), split="train")["id"]) == sorted(truth)


def test_rescore_false_without_an_earlier_output_says_what_to_run(tmp_path):
    from vstar.errors import InputError

    with pytest.raises(InputError, match="run `vstar select` with --captions and --scorer first"):
        select_captions(SelectConfig(output=str(tmp_path / "none"), rescore=False))


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_rows(trained_scorer, captions, tmp_path):
    pytest.importorskip("ray")
    import ray

    captions_dir, _ = captions
    local = select_captions(
        SelectConfig(captions=str(captions_dir), scorer=str(trained_scorer), output=str(tmp_path / "local"),
                     batch_size=3, num_proc=2)
    )  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = select_captions(
            SelectConfig(captions=str(captions_dir), scorer=str(trained_scorer), output=str(tmp_path / "ray"),
                         batch_size=3, executor="ray", ray_concurrency=2)
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert load_dataset(str(local), split="train").to_list() == load_dataset(str(on_ray), split="train").to_list()


def test_the_selection_is_pairs_train_scorer_reads(trained_scorer, captions, tmp_path):
    # The caption flywheel: what select keeps (clip windows and their best captions) trains the next scorer.
    from vstar.train.scorer import ScorerTrainConfig, train_scorer

    captions_dir, truth = captions
    selected = select_captions(
        SelectConfig(captions=str(captions_dir), scorer=str(trained_scorer), output=str(tmp_path / "s"))
    )
    metrics = train_scorer(
        ScorerTrainConfig(pairs=str(selected), model=str(trained_scorer), output=str(tmp_path / "next"), max_steps=2,
                          batch_size=4, eval_split="train")
    )  # fmt: skip
    assert metrics["pairs"] == len(truth) and metrics["recall_at_1"] == 1.0


def test_an_output_folder_holding_something_else_is_not_replaced(trained_scorer, captions, tmp_path):
    from vstar.errors import InputError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an earlier `vstar select` output"):
        select_captions(
            SelectConfig(captions=str(captions[0]), scorer=str(trained_scorer), output=str(tmp_path / "mine"))
        )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
