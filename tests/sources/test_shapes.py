"""The shapes builder (deterministic, loadable) and what every builder's writer guarantees: a build that fails
part-way keeps the rows already written and says why.

Run: `python -m pytest tests/sources/test_shapes.py -q`
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Value, load_dataset

from vstar.io import split_file
from vstar.schema import source_features
from vstar.sources import SOURCES, builder_config, write_source_dataset
from vstar.sources.shapes import CLASSES, ShapesConfig, build_shapes
from vstar.video import sample_frames


def _build(path, seed):
    return build_shapes(ShapesConfig(output=str(path), num_train=6, num_validation=2, num_test=3, seed=seed))


def test_same_seed_same_bytes(tmp_path):
    first, second, other = _build(tmp_path / "a", 7), _build(tmp_path / "b", 7), _build(tmp_path / "c", 8)
    table = pq.read_table(first / split_file("train")).to_pylist()
    assert table == pq.read_table(second / split_file("train")).to_pylist()
    assert table != pq.read_table(other / split_file("train")).to_pylist()


def test_shapes_loads_with_typed_labels(tmp_path):
    ds = load_dataset(str(_build(tmp_path / "shapes", 1)))
    assert {split: len(ds[split]) for split in ds} == {"train": 6, "validation": 2, "test": 3}
    assert ds["train"].features["label"].names == CLASSES
    row = ds["test"][0]
    assert row["id"] == "shapes-test-00000" and row["source"] == "shapes" and row["video"]["bytes"]
    assert sample_frames(row["video"], num_frames=8).frames.shape == (8, 64, 64, 3)
    card = (tmp_path / "shapes" / "README.md").read_text()
    assert "## Clips per class" in card and "11 rows written of 11 read; none skipped" in card


def test_every_builder_is_registered_with_its_settings():
    assert {"shapes", "kinetics", "finediving", "folder", "table"} <= set(SOURCES.names())
    for name in SOURCES.names():
        assert builder_config(name).__dataclass_fields__["output"]
        assert "push_to_hub" not in builder_config(name).__dataclass_fields__


def test_a_failure_keeps_what_was_written(tmp_path):
    features = source_features({"label": ClassLabel(names=["a", "b"]), "score": Value("float32")})

    def rows(split, count, fail_at=None):
        for i in range(count):
            if i == fail_at:
                raise RuntimeError(f"row {i} of {split} is broken")
            yield {"id": f"{split}-{i}", "video": {"path": None, "bytes": b"x"}, "start": None, "end": None,
                   "source": "t", "split": split, "label": "ab"[i % 2], "score": float(i)}  # fmt: skip

    with pytest.raises(RuntimeError, match="row 3 of test is broken"):
        write_source_dataset(
            {"train": rows("train", 5), "test": rows("test", 10, fail_at=3)},
            features,
            tmp_path,
            card={"pretty_name": "partial"},
            report={"rows_read": 9, "skipped": []},
        )
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["complete"] is False and "row 3 of test is broken" in report["error"]
    assert report["rows_per_split"] == {"train": 5, "test": 3}
    ds = load_dataset(str(tmp_path))
    assert ds["train"]["id"] == [f"train-{i}" for i in range(5)] and ds["test"]["label"] == [0, 1, 0]
    assert "The build stopped early" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num_frames", "0"], "--num_frames must be at least 1, not 0."),
        (["--fps", "0"], "--fps must be greater than 0, not 0.0."),
        (["--num_train", "-1"], "--num_train must be at least 0, not -1."),
        (["--num_train", "0", "--num_validation", "0", "--num_test", "0"], "are all 0: ask for at least one clip."),
        (["--size", "16", "--square_size", "20"], "--square_size (20) must be smaller than --size (16)"),
    ],
)
def test_impossible_settings_fail_at_start(tmp_path, capsys, flags, message):
    from vstar.cli import main

    out = tmp_path / "out"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["build", "shapes", "--output", str(out), *flags])
    errors = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(errors) == 1 and message in errors[0]
    assert not out.exists()  # refused before anything was written, no 0-byte videos


def test_no_rows_at_all_is_an_error_naming_the_report(tmp_path):
    from vstar.errors import InputError

    features = source_features({"label": ClassLabel(names=["a"])})
    report = {"rows_read": 2, "skipped": []}
    for row in ("x.csv:2", "x.csv:3"):
        report["skipped"].append({"row": row, "id": None, "file": None, "reason": "missing: no file"})
    with pytest.raises(InputError, match=r"all 2 rows read were left out \(missing 2\).*build_report\.json"):
        write_source_dataset({"train": iter([])}, features, tmp_path, card={}, report=report)
    assert json.loads((tmp_path / "build_report.json").read_text())["rows_written"] == 0
    assert not (tmp_path / "README.md").exists() and not list(tmp_path.glob("data/*.parquet"))
