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
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from vstar.errors import ConfigError
from vstar.registry import Registry

logger = logging.getLogger(__name__)

Row = dict[str, Any]
BatchFn = Callable[[list[Row]], list[Row]]

EXECUTORS: Registry = Registry("executor")


class Executor(Protocol):
    """Runs `fn` over batches of rows and returns its rows in input order."""

    def map_batches(
        self,
        fn: BatchFn | type,
        rows: Iterable[Row],
        batch_size: int = 1,
        fn_constructor_kwargs: dict[str, Any] | None = None,
    ) -> Iterator[Row]: ...


def _build(fn: BatchFn | type, kwargs: dict[str, Any] | None) -> BatchFn:
    """A class is built once (per worker); a function is used as it is."""
    if isinstance(fn, type):
        return fn(**(kwargs or {}))
    if kwargs:
        raise ConfigError("fn_constructor_kwargs is only for a class given as the batch function.")
    return fn


def _batches(rows: Iterable[Row], batch_size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, batch_size)):
        yield batch


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")


def _checked(out: Any, where: str) -> list[Row]:
    if not isinstance(out, list) or not all(isinstance(row, dict) for row in out):
        raise TypeError(f"{where}: the batch function must return a list of row dicts, not {type(out).__name__}.")
    return out


# The per-process batch function of the local executor's workers, built by the pool's initializer.
_WORKER_FN: BatchFn | None = None


def _init_worker(payload: bytes) -> None:
    global _WORKER_FN
    fn, kwargs = pickle.loads(payload)
    _WORKER_FN = _build(fn, kwargs)


def _run_worker_batch(batch: list[Row]) -> list[Row]:
    assert _WORKER_FN is not None
    return _checked(_WORKER_FN(batch), "local worker")


@EXECUTORS.register("local")
@dataclass
class LocalExecutor:
    """Batches run in `num_proc` processes on this machine (1: in this process, no pool).

    Args:
        num_proc: worker processes.
        in_flight: batches per worker submitted ahead of the one being returned (memory stays bounded).
    """

    num_proc: int = 1
    in_flight: int = 2

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
                per worker with `fn_constructor_kwargs`). With `num_proc > 1` it must be picklable (module level).
            rows: input rows, consumed lazily.
            batch_size: input rows per call.
            fn_constructor_kwargs: arguments of the class's constructor.
        """
        _check_batch_size(batch_size)
        if self.num_proc <= 1:
            call = _build(fn, fn_constructor_kwargs)
            for batch in _batches(rows, batch_size):
                yield from _checked(call(batch), "local")
            return
        payload = pickle.dumps((fn, fn_constructor_kwargs))
        # Fork keeps start-up cheap (no re-import of torch/datasets); workers only run the batch function.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(self.num_proc, _init_worker, (payload,))
        try:
            pending: deque = deque()
            limit = self.num_proc * max(1, self.in_flight)
            for batch in _batches(rows, batch_size):
                pending.append(pool.apply_async(_run_worker_batch, (batch,)))
                if len(pending) >= limit:
                    yield from pending.popleft().get()
            while pending:
                yield from pending.popleft().get()
            # Workers leave on their own: a SIGTERM would also reach signal handlers they inherited (Ray's).
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()


class _RayStage:
    """The actor a Ray Data stage runs: unpickles the rows of a batch, calls the batch function, pickles its rows."""

    def __init__(self, payload: bytes):
        fn, kwargs = pickle.loads(payload)
        self.fn = _build(fn, kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = [pickle.loads(blob) for blob in batch["row"]]
        out = _checked(self.fn(rows), "ray actor")
        return {"row": np.array([pickle.dumps(row) for row in out] or [], dtype=object)}


@EXECUTORS.register("ray")
@dataclass
class RayExecutor:
    """Batches run as a Ray Data `map_batches` stage with an actor pool, on the cluster `ray.init` joins.

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

    def map_batches(
        self,
        fn: BatchFn | type,
        rows: Iterable[Row],
        batch_size: int = 1,
        fn_constructor_kwargs: dict[str, Any] | None = None,
    ) -> Iterator[Row]:
        """Yield the rows `fn` makes from each batch of `batch_size` input rows, in input order.

        Args:
            fn: as for `LocalExecutor.map_batches`; it travels to the actors with cloudpickle.
            rows: input rows (read into the driver once, since Ray Data starts from a list of items).
            batch_size: input rows per call.
            fn_constructor_kwargs: arguments of the class's constructor.
        """
        _check_batch_size(batch_size)
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
        payload = ray.cloudpickle.dumps((fn, fn_constructor_kwargs))
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
