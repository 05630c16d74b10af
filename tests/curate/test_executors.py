"""The executors behind the curation stages: local processes and a real local Ray instance (2 CPUs) give the same rows
in the same order, for a generic batch function and for `vstar split` end to end."""

from __future__ import annotations

import json
import sys

import pytest
from split_fixtures import SHORT_SCRIPT, Shot, make_long_video

from vstar.curate.executors import get_executor

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    # The batch functions below live in this test module, which Ray's workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def expand(batch):
    """A row may become none, one or several rows; values of every kind come back as they were."""
    out = []
    for row in batch:
        for copy in range(row["x"] % 3):
            batch_ids = [r["x"] for r in batch]
            out.append({**row, "copy": copy, "batch": batch_ids, "blob": bytes([row["x"]]), "none": None})
    return out


class Scale:
    """A class batch function: built once per worker with its arguments (where a model would load)."""

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, batch):
        return [{"x": row["x"], "y": row["x"] * self.factor, "size": len(batch)} for row in batch]


ROWS = [{"x": i, "video": {"path": f"/v/{i}.mp4", "bytes": None}, "start": None} for i in range(23)]
EXPECTED = [row for at in range(0, 23, 4) for row in expand(ROWS[at : at + 4])]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_local_executor_keeps_batches_and_order(num_proc):
    assert list(get_executor("local", num_proc=num_proc).map_batches(expand, ROWS, batch_size=4)) == EXPECTED
    scaled = list(get_executor("local", num_proc=num_proc).map_batches(Scale, ROWS, 5, {"factor": 3}))
    assert [r["y"] for r in scaled] == [3 * i for i in range(23)] and scaled[-1]["size"] == 3


def test_local_executor_reads_ahead_boundedly():
    consumed = []

    def rows():
        for row in ROWS * 10:
            consumed.append(row["x"])
            yield row

    results = get_executor("local", num_proc=2).map_batches(Scale, rows(), 2, {"factor": 1})
    next(results)
    # Two batches per worker in flight, plus the one being filled: not the whole input.
    assert len(consumed) <= 2 * 2 * 2 + 2
    assert len(list(results)) == 229


def test_ray_and_local_give_the_same_rows(ray_instance):
    # A plain function here; a class with constructor arguments (`Splitter`) in the split test below.
    executor = get_executor("ray", num_cpus=1)
    assert list(executor.map_batches(expand, ROWS, batch_size=4)) == EXPECTED
    assert list(executor.map_batches(expand, [], batch_size=4)) == []


def test_errors_and_unknown_names():
    from vstar.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="local, ray"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="num_proc"):
        get_executor("local", workers=2)
    with pytest.raises(TypeError, match="list of row dicts"):
        list(get_executor("local").map_batches(lambda batch: {"x": 1}, ROWS, 2))
    # A failing batch fails the stage (the per-video errors of `vstar split` are caught inside its batch function).
    with pytest.raises(ZeroDivisionError):
        list(get_executor("local", num_proc=2).map_batches(_divide, ROWS, 2))


def _divide(batch):
    return [{"x": 1 / (row["x"] - 5)} for row in batch]


def test_split_on_ray_writes_the_same_dataset(ray_instance, tmp_path):
    from datasets import load_dataset

    from vstar.curate.split import SplitConfig, split_videos

    folder = tmp_path / "raw"
    folder.mkdir()
    make_long_video(folder / "one.mp4", SHORT_SCRIPT)
    make_long_video(folder / "two.mp4", [*SHORT_SCRIPT[1:], ("cut", Shot("static", 3, (150, 90, 200), "checker"))])
    make_long_video(folder / "three.mp4", SHORT_SCRIPT[::-1])
    outputs = {}
    for name, options in {"local": {"num_proc": 2}, "ray": {"executor": "ray", "ray_concurrency": 2}}.items():
        config = SplitConfig(videos=str(folder), output=str(tmp_path / name), min_seconds=1, **options)
        outputs[name] = split_videos(config)
    local, on_ray = (load_dataset(str(outputs[n]), split="train").to_list() for n in ("local", "ray"))
    assert len(local) == 8 and local == on_ray
    reports = [json.loads((outputs[n] / "build_report.json").read_text()) for n in ("local", "ray")]
    assert reports[0]["dropped"] == reports[1]["dropped"] and reports[0]["videos"] == reports[1]["videos"]
    assert [entry["reason"] for entry in reports[0]["dropped"]] == ["static"]
