"""Where a curation stage's per-row work runs: processes on this machine (`local`, the default) or a Ray cluster.

A stage hands an executor a function of a batch of rows and the rows; the executor returns the rows the function
made, in input order, whatever ran them. The function may be a plain function or a class (built once per worker:
the place to load a model), and may return any number of rows per input row (a video becomes many clips).

```python
from vstar.curate.executors import get_executor

def double(batch):  # list of row dicts -> list of row dicts
    return [{**row, "y": 2 * row["x"]} for row in batch]

rows = [{"x": i} for i in range(10)]
local = list(get_executor("local", num_proc=2).map_batches(double, rows, batch_size=4))
on_ray = list(get_executor("ray", address="auto", num_cpus=1, concurrency=4).map_batches(double, rows, batch_size=4))
assert local == on_ray
```

- `local`: `num_proc` worker processes (1: in this process), at most two batches per worker in flight so memory
  stays flat however many rows stream through.
- `ray`: a Ray Data `map_batches` stage with an actor pool of `concurrency` actors, each holding `num_cpus` CPUs
  (and `num_gpus` GPUs), over `ray.init(address=...)` (`None` starts a local instance; `"auto"` joins the cluster
  this machine belongs to). Rows travel pickled, so they come back exactly as the function returned them (Arrow
  would turn lists into arrays and ints into NumPy scalars); Ray keeps the input order (`preserve_order`). Ray is an
  optional extra (`pip install "vstar[ray]"`). Nothing here schedules across machines: Ray does.

The same function, the same rows and the same `batch_size` give the same output rows in the same order on every
executor (the tests check it on a local Ray instance).

`parallel_map` is the process pool under the local executor, and what the source builders probe and encode videos
with: `fn(item)` for every item in `num_proc` worker processes, in input order, reading the input lazily.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from vstar.errors import ConfigError
from vstar.registry import Registry

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")
Row = dict[str, Any]
BatchFn = Callable[[list[Row]], list[Row]]

EXECUTORS: Registry = Registry("executor")


def _start_method() -> str:
    # Fork keeps start-up cheap (no re-import of torch/datasets in every worker); workers only run the given function.
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def parallel_map(
    fn: Callable[[A], Any],
    items: Iterable[T],
    num_proc: int = 1,
    batch_size: int = 64,
    arg: Callable[[T], A] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    in_flight: int = 2,
) -> Iterator[tuple[T, Any]]:
    """Yield `(item, fn(arg(item)))` in input order, computing `fn` in `num_proc` worker processes.

    Items are consumed lazily: at most `in_flight` batches of `batch_size * num_proc` items are read and not yet
    returned, so memory does not grow with the number of items (`multiprocessing.Pool.imap` would read the whole
    input ahead). Workers take them in tasks of `batch_size // 8` items (at least 1); each task returned makes room
    for the next.

    Args:
        fn: a picklable (module-level) function.
        items: any iterable, consumed once.
        num_proc: worker processes; 1 runs everything in this process.
        batch_size: items per worker in a batch.
        arg: what of each item is sent to `fn` (default: the item itself); the item stays in this process.
        initializer: `initializer(*initargs)` runs once in every process that runs `fn` (each worker, or this one
            when `num_proc` is 1) before its first item: the place to build what `fn` uses.
        initargs: the initializer's arguments (picklable).
        in_flight: batches read ahead of the items being returned (at least 1).
    """
    arg = arg or (lambda item: item)
    if num_proc <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield item, fn(arg(item))
        return
    iterator = iter(items)
    task_size, window = max(1, batch_size // 8), max(1, in_flight) * batch_size * num_proc
    setup = (_guarded_setup, (initializer, initargs)) if initializer is not None else (None, ())
    pool = multiprocessing.get_context(_start_method()).Pool(num_proc, *setup)
    try:
        pending: deque = deque()  # (items, their results to come), oldest first
        reading = 0
        while True:
            while reading < window and (taken := list(islice(iterator, min(task_size, window - reading)))):
                pending.append((taken, pool.apply_async(_map_task, (fn, [arg(item) for item in taken]))))
                reading += len(taken)
            if not pending:
                break
            done_items, result = pending.popleft()
            reading -= len(done_items)
            yield from zip(done_items, result.get())
        # Workers leave on their own: a SIGTERM would also reach signal handlers they inherited (Ray's).
        pool.close()
    except BaseException:  # an error, or the caller stopped reading: nothing more is wanted from the workers
        pool.terminate()
        raise
    finally:
        pool.join()


# A worker's failed set-up, raised by its first task: a pool whose initializer raises would start new workers
# forever, and the map would never end.
_SETUP_ERROR: BaseException | None = None


def _guarded_setup(initializer: Callable[..., None], initargs: tuple) -> None:
    global _SETUP_ERROR
    try:
        initializer(*initargs)
    except Exception as error:
        _SETUP_ERROR = error


def _map_task(fn: Callable[[A], Any], args: list[A]) -> list[Any]:
    if _SETUP_ERROR is not None:
        raise _SETUP_ERROR
    return [fn(value) for value in args]


class _BatchFunction:
    """The batch function as the process or actor running it holds it: a class built once with its arguments, its
    output checked."""

    def __init__(self, fn: BatchFn | type, kwargs: dict[str, Any] | None, where: str):
        self.fn = fn(**(kwargs or {})) if isinstance(fn, type) else fn
        self.where = where

    @classmethod
    def unpickle(cls, payload: bytes, where: str) -> _BatchFunction:
        fn, kwargs = pickle.loads(payload)
        return cls(fn, kwargs, where)

    def __call__(self, batch: list[Row]) -> list[Row]:
        out = self.fn(batch)
        if not isinstance(out, list) or not all(isinstance(row, dict) for row in out):
            raise TypeError(
                f"{self.where}: the batch function must return a list of row dicts, not {type(out).__name__}."
            )
        return out


class Executor:
    """Runs `fn` over batches of rows and returns its rows in input order; each executor's `_run` says where."""

    def map_batches(
        self,
        fn: BatchFn | type,
        rows: Iterable[Row],
        batch_size: int = 1,
        fn_constructor_kwargs: dict[str, Any] | None = None,
    ) -> Iterator[Row]:
        """Yield the rows `fn` makes from each batch of `batch_size` input rows, in input order.

        Args:
            fn: `fn(batch: list[dict]) -> list[dict]`, or a class whose instances are such a callable (built once
                per worker with `fn_constructor_kwargs`).
            rows: input rows.
            batch_size: input rows per call.
            fn_constructor_kwargs: arguments of the class's constructor.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")
        # Checked here, not where the class is built: a worker that fails to start is replaced, again and again.
        if fn_constructor_kwargs and not isinstance(fn, type):
            raise ConfigError("fn_constructor_kwargs is only for a class given as the batch function.")
        yield from self._run(fn, rows, batch_size, fn_constructor_kwargs)

    def _run(
        self, fn: BatchFn | type, rows: Iterable[Row], batch_size: int, kwargs: dict[str, Any] | None
    ) -> Iterator[Row]:
        raise NotImplementedError


def _batches(rows: Iterable[Row], batch_size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, batch_size)):
        yield batch


# The batch function of a local executor's worker process, built by the pool's initializer.
_WORKER_FN: _BatchFunction | None = None


def _init_worker(payload: bytes) -> None:
    global _WORKER_FN
    _WORKER_FN = _BatchFunction.unpickle(payload, "local worker")


def _run_worker_batch(batch: list[Row]) -> list[Row]:
    assert _WORKER_FN is not None
    return _WORKER_FN(batch)


@EXECUTORS.register("local")
@dataclass
class LocalExecutor(Executor):
    """Batches run in `num_proc` processes on this machine (1: in this process, no pool), through `parallel_map`.

    Rows are read lazily. With `num_proc > 1` the batch function must be picklable (module level).

    Args:
        num_proc: worker processes.
        in_flight: batches per worker submitted ahead of the one being returned (memory stays bounded).
    """

    num_proc: int = 1
    in_flight: int = 2

    def _run(
        self, fn: BatchFn | type, rows: Iterable[Row], batch_size: int, kwargs: dict[str, Any] | None
    ) -> Iterator[Row]:
        if self.num_proc <= 1:
            call, setup, payload = _BatchFunction(fn, kwargs, "local"), None, ()
        else:
            call, setup, payload = _run_worker_batch, _init_worker, (pickle.dumps((fn, kwargs)),)
        # Items of `parallel_map` are whole batches, one per task: `in_flight * num_proc` batches in flight.
        batches = _batches(rows, batch_size)
        for _, out in parallel_map(call, batches, self.num_proc, 1, None, setup, payload, self.in_flight):
            yield from out


class _RayStage:
    """The actor a Ray Data stage runs: unpickles the rows of a batch, calls the batch function, pickles its rows."""

    def __init__(self, payload: bytes):
        self.fn = _BatchFunction.unpickle(payload, "ray actor")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = [pickle.loads(blob) for blob in batch["row"]]
        out = self.fn(rows)
        return {"row": np.array([pickle.dumps(row) for row in out] or [], dtype=object)}


@EXECUTORS.register("ray")
@dataclass
class RayExecutor(Executor):
    """Batches run as a Ray Data `map_batches` stage with an actor pool, on the cluster `ray.init` joins.

    The batch function travels to the actors with cloudpickle; the rows are read into the driver once, since Ray
    Data starts from a list of items.

    Args:
        address: the cluster (`"auto"`, `"ray://head:10001"`); `None` joins the instance already started in this
            process, else starts a local one.
        num_cpus: CPUs each actor holds.
        num_gpus: GPUs each actor holds (a scorer on GPUs).
        concurrency: actors in the pool (default: as many as the cluster's CPUs allow).
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int | None = None

    def _init(self):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--executor ray needs Ray Data: pip install 'vstar[ray]' (or 'ray[data]'), or use --executor local."
            ) from None
        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        return ray

    def _run(
        self, fn: BatchFn | type, rows: Iterable[Row], batch_size: int, kwargs: dict[str, Any] | None
    ) -> Iterator[Row]:
        ray = self._init()
        items = [{"row": pickle.dumps(row)} for row in rows]
        if not items:
            return
        context = ray.data.DataContext.get_current()
        preserved = context.execution_options.preserve_order
        context.execution_options.preserve_order = True
        # Input blocks of whole batches, so each call sees exactly the batches the local executor makes.
        blocks = max(1, -(-len(items) // batch_size))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        cpus = float(ray.cluster_resources().get("CPU", 1))
        concurrency = self.concurrency or max(1, min(blocks, int(cpus // max(self.num_cpus, 1e-3))))
        payload = ray.cloudpickle.dumps((fn, kwargs))
        stage = dataset.map_batches(
            _RayStage,
            fn_constructor_kwargs={"payload": payload},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=concurrency,
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus or None,
            zero_copy_batch=True,
        )
        logger.info("Ray stage: %d rows in %d batches over %d actors", len(items), blocks, concurrency)
        try:
            for out in stage.iter_rows():
                yield pickle.loads(out["row"])
        finally:
            context.execution_options.preserve_order = preserved  # the caller's other Ray Data work is left alone


def get_executor(name: str = "local", **options: Any) -> Executor:
    """The executor registered as `name` (`local`, `ray`) with its options.

    Args:
        name: the executor.
        **options: its settings (`num_proc` for local; `address`, `num_cpus`, `num_gpus`, `concurrency` for ray);
            options set to `None` are left at their defaults.

    Raises:
        UnknownNameError: for an unknown name, listing the known ones.
        ConfigError: for an option the executor does not take.
    """
    cls = EXECUTORS.get(name)
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"The {name} executor takes {', '.join(sorted(known))}, not {', '.join(unknown)}.")
    return cls(**{key: value for key, value in options.items() if value is not None})
