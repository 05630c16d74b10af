"""Limited runs draw a seeded sample stratified by the label: every class (or score range) is represented."""

import json
from collections import Counter

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from vstar.subsets import choose_indices, score_bins, select_subset
from vstar.tasks.base import get_task


def _sorted_kinetics(shared_data, per_class: int) -> Dataset:
    """A split sorted by label, as the Kinetics CSVs are: `per_class` rows of each of the 700 classes."""
    classes = (shared_data / "kinetics" / "k700_labels.txt").read_text().split("\n")
    classes = [c for c in classes if c.strip()]
    rows = {"id": [], "label": []}
    for index, name in enumerate(classes):
        for k in range(per_class):
            rows["id"].append(f"{name.replace(' ', '_')}-{k}")
            rows["label"].append(index)
    features = Features({"id": Value("string"), "label": ClassLabel(names=classes)})
    return Dataset.from_dict(rows, features=features)


def test_kinetics_limit_gives_ten_per_class(shared_data, tmp_path):
    dataset = _sorted_kinetics(shared_data, per_class=12)
    first_rows = Counter(dataset.select(range(7000))["label"])
    assert len(first_rows) == 584  # what "the first 7,000 rows" of a sorted file covered

    task = get_task("action_recognition")
    subset = select_subset(dataset, 7000, seed=0, task=task, record=tmp_path, split="validation")
    per_class = Counter(subset["label"])
    assert len(per_class) == 700 and set(per_class.values()) == {10}
    record = json.loads((tmp_path / "subset-validation.json").read_text())
    assert record["stratified_by"] == "label" and record["chosen_rows"] == 7000
    assert sorted(record["ids"]) == sorted(subset["id"])
    assert len(record["strata"]) == 700


def test_sample_is_seeded_and_uneven_strata_are_filled():
    strata = ["a"] * 50 + ["b"] * 3 + ["c"] * 20
    first = choose_indices(strata, 30, seed=1)
    assert first == choose_indices(strata, 30, seed=1)
    assert first != choose_indices(strata, 30, seed=2)
    counts = Counter(strata[i] for i in first)
    # The small class gives all it has; the others share the rest as evenly as they can.
    assert counts["b"] == 3 and abs(counts["a"] - counts["c"]) <= 1 and sum(counts.values()) == 30
    assert choose_indices(strata, None, seed=0) == list(range(len(strata)))
    assert choose_indices(strata, 500, seed=0) == list(range(len(strata)))
    with pytest.raises(ValueError, match="0 or more"):
        choose_indices(strata, -1, seed=0)


def test_quality_subsets_span_the_score_range():
    scores = [float(s) for s in range(100)]  # sorted by score, as a file sorted by quality would be
    dataset = Dataset.from_dict({"id": [f"d{i}" for i in range(100)], "dive_score": scores})
    subset = select_subset(dataset, 10, seed=0, task=get_task("action_quality"))
    chosen = sorted(subset["dive_score"])
    assert len(chosen) == 10
    # one clip from every score decile, not the ten lowest scores
    assert [int(s // 10) for s in chosen] == list(range(10))
    assert score_bins([1.0, None, 3.0], bins=2) == [0, None, 1]


def test_offset_skips_rows_first_and_is_checked():
    dataset = Dataset.from_dict({"id": [str(i) for i in range(10)], "label": ["x"] * 5 + ["y"] * 5})
    subset = select_subset(dataset, 2, seed=0, task=get_task("action_recognition"), offset=5)
    assert set(subset["label"]) == {"y"} and len(subset) == 2
    with pytest.raises(ValueError, match="outside the split"):
        select_subset(dataset, 2, seed=0, offset=11)


def test_cycle_sources_are_a_stratified_sample(shapes_dir, tmp_path):
    from loop_helpers import small_cycle_config, training_config

    from vstar.cycle import CycleRunner
    from vstar.io import load_split

    train = load_split(shapes_dir, "train")
    classes = Counter(train["label"][16:])
    config = small_cycle_config(tmp_path, shapes_dir, source_limit=len(classes))
    runner = CycleRunner(config, training_config(model_name_or_path="unused"))
    labels = Counter(runner.sources[i]["label"] for i in runner.sources)
    # one clip per class that the rows after the offset hold
    assert len(labels) == len(classes) and set(labels.values()) == {1}
    record = json.loads((tmp_path / "subset-train.json").read_text())
    assert sorted(record["ids"]) == sorted(runner.sources)
    # Rows are read from Arrow one at a time; a lazy row's video is read when asked for.
    clip_id = next(iter(runner.sources))
    lazy = runner.sources.lazy_row(clip_id)
    assert callable(lazy["video"]) and lazy["video"]() == runner.sources[clip_id]["video"]
