"""The executors behind the curation stages: local processes and a real local Ray instance (2 CPUs) give the same rows
in the same order, for a generic batch function and for `vstar split` end to end; and `parallel_map`, the process
pool under the local executor and the source builders.

Run: `python -m pytest tests/curate/test_executors.py -q`
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import pytest
from split_fixtures import SHORT_SCRIPT, Shot, make_long_video

from vstar.curate.executors import get_executor, parallel_map


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
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
    executor = get_executor("ray", num_cpus=1)
    assert list(executor.map_batches(expand, ROWS, batch_size=4)) == EXPECTED
    assert list(executor.map_batches(expand, [], batch_size=4)) == []
    local = list(get_executor("local", num_proc=2).map_batches(Scale, ROWS, 5, {"factor": 3}))
    assert list(executor.map_batches(Scale, ROWS, 5, {"factor": 3})) == local


def test_errors_and_unknown_names():
    from vstar.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="local, ray"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="num_proc"):
        get_executor("local", workers=2)
    with pytest.raises(TypeError, match="^local: the batch function must return a list of row dicts, not dict"):
        list(get_executor("local").map_batches(lambda batch: {"x": 1}, ROWS, 2))
    with pytest.raises(TypeError, match="^local worker: the batch function must return a list of row dicts"):
        list(get_executor("local", num_proc=2).map_batches(_not_rows, ROWS, 2))
    # A batch function that cannot be built (a model that fails to load) fails the stage with its own error, in
    # this process and in workers, instead of starting new workers forever.
    for num_proc in (1, 2):
        with pytest.raises(FileNotFoundError, match="no-such-model"):
            list(get_executor("local", num_proc=num_proc).map_batches(Unloadable, ROWS, 2, {"path": "no-such-model"}))
    # A failing batch fails the stage (the per-video errors of `vstar split` are caught inside its batch function).
    with pytest.raises(ZeroDivisionError):
        list(get_executor("local", num_proc=2).map_batches(_divide, ROWS, 2))
    for name, options in [("local", {"num_proc": 1}), ("local", {"num_proc": 2}), ("ray", {})]:
        executor = get_executor(name, **options)
        with pytest.raises(ConfigError, match="at least 1, not 0"):
            list(executor.map_batches(expand, ROWS, 0))
        # Refused before any worker starts (a worker whose set-up fails would be replaced forever); Ray is not needed.
        with pytest.raises(ConfigError, match="fn_constructor_kwargs is only for a class"):
            list(executor.map_batches(expand, ROWS, 2, {"factor": 3}))
    assert not multiprocessing.active_children()


class Unloadable:
    def __init__(self, path: str):
        raise FileNotFoundError(f"{path}: no weights there")

    def __call__(self, batch):
        return batch


def _divide(batch):
    return [{"x": 1 / (row["x"] - 5)} for row in batch]


def _not_rows(batch):
    return [row["x"] for row in batch]


# What `_remember` set up in the process that runs `_tagged`, and a value the parent sets at run time.
_SETUP: dict = {}
_PARENT_VALUE = "as imported"


def _remember(tag):
    _SETUP["tag"] = tag
    _SETUP["calls"] = _SETUP.get("calls", 0) + 1


def _tagged(x):
    return x * x, _SETUP.get("tag"), _SETUP.get("calls"), os.getpid(), _PARENT_VALUE


def test_parallel_map_keeps_order_and_reads_ahead_boundedly():
    consumed = []

    def items():
        for i in range(60):
            consumed.append(i)
            # The item stays in this process (a lambda would not pickle); only `arg(item)` goes to a worker.
            yield i, lambda i=i: i

    results = parallel_map(_tagged, items(), num_proc=2, batch_size=4, arg=lambda item: item[0])
    first = next(results)
    assert len(consumed) <= 2 * 4 * 2  # two rounds of batch_size * num_proc in flight, not the whole input
    rest = list(results)
    assert [item[0] for item, _ in [first, *rest]] == list(range(60))
    assert [out[0] for _, out in [first, *rest]] == [i * i for i in range(60)]
    assert os.getpid() not in {out[3] for _, out in [first, *rest]}
    assert not multiprocessing.active_children()  # the workers left once the input was done


@pytest.mark.parametrize("num_proc", [1, 2])
def test_parallel_map_sets_up_each_process_once(num_proc, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_PARENT_VALUE", "set at run time")
    monkeypatch.setattr(sys.modules[__name__], "_SETUP", {})
    out = [result for _, result in parallel_map(_tagged, range(40), num_proc, 4, None, _remember, ("ready",))]
    assert [square for square, *_ in out] == [i * i for i in range(40)]
    assert {(tag, calls) for _, tag, calls, _, _ in out} == {("ready", 1)}
    pids = {pid for *_, pid, _ in out}
    assert pids == {os.getpid()} if num_proc == 1 else (os.getpid() not in pids and len(pids) <= num_proc)
    if "fork" in multiprocessing.get_all_start_methods():
        # Forked workers see what this process set after importing the module (spawned ones would re-import it).
        assert {parent for *_, parent in out} == {"set at run time"}


def test_parallel_map_stops_its_workers_on_an_error_or_when_left_unread():
    with pytest.raises(ZeroDivisionError):
        list(parallel_map(_inverse, range(-20, 20), num_proc=2, batch_size=2))
    assert not multiprocessing.active_children()
    results = parallel_map(_inverse, range(1, 1000), num_proc=2, batch_size=2)
    assert next(results) == (1, 1.0)
    results.close()
    assert not multiprocessing.active_children()


def _inverse(x):
    return 1 / x


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
