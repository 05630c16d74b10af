"""The generation stage: answer prompts about clips with a backend, writing results incrementally.

Results go to Parquet chunk files (`<name>-rank<r>-<n>.parquet`), each written whole and renamed into place,
so a run killed at any point keeps every finished chunk and a re-run skips the requests already answered.

The unanswered requests, in id order, are cut into chunks of `chunk_size`; under `torchrun` / `accelerate launch`
rank r answers chunks r, r + world_size, ... Within a chunk, batches group similar prompt lengths. A chunk's
batches depend only on the request list and the settings, never on the number of processes or on where an
earlier run stopped (finished chunks are whole, so the rest splits into the same chunks again): 1 process,
8 processes and a run resumed with another number of processes give the same answers.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from vstar.distributed import init_distributed, wait_for_everyone, world_from_env
from vstar.io import ParquetRowWriter
from vstar.registry import Registry
from vstar.schema import GENERATION_FEATURES
from vstar.video import SampledClip, sample_frames

logger = logging.getLogger(__name__)

BACKENDS: Registry = Registry("generation backend")


@dataclass
class GenerationRequest:
    """One prompt about one clip.

    Args:
        id: the clip id.
        attempt: `direct` or `rationalized` (with the label as a hint).
        question: the question as it is stored in training data (never with the hint).
        prompt: the full user text sent to the model.
        video: the `datasets.Video(decode=False)` entry (path and/or bytes).
        start, end: the clip window in seconds.
    """

    id: str
    attempt: str
    question: str
    prompt: str
    video: Any
    start: float | None = None
    end: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.id, self.attempt


@dataclass
class GenerationSettings:
    """How answers are generated (shared by every backend)."""

    backend: str = field(default="transformers", metadata={"help": "Generation backend: transformers or vllm."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 for greedy decoding, else sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (when sampling)."})
    num_frames: int | None = field(default=8, metadata={"help": "Frames sampled per clip."})
    video_fps: float | None = field(default=None, metadata={"help": "Sample frames per second instead."})
    chunk_size: int = field(default=256, metadata={"help": "Requests per result file (the unit of resumption)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    decode_workers: int = field(default=2, metadata={"help": "Threads that decode a batch's clips in parallel."})
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "vllm: GPUs one model copy is split over (tensor parallelism)."}
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "vllm: share of each GPU's memory the engine may take."}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "vllm: longest prompt + answer in tokens (default: the model's)."}
    )
    lora_mode: str = field(
        default="request",
        metadata={
            "help": "vllm: how an adapter is applied: `request` (LoRARequest, base weights shared) or `merge` "
            "(merged into a copy of the weights first, fastest generation)."
        },
    )
    max_lora_rank: int = field(default=64, metadata={"help": "vllm: largest LoRA rank the engine accepts."})


def sample_clip(request: GenerationRequest, settings: GenerationSettings) -> SampledClip:
    """The frames of a request's clip window, as the settings ask (`num_frames` or `video_fps`)."""
    return sample_frames(
        request.video, num_frames=settings.num_frames, fps=settings.video_fps, start=request.start, end=request.end
    )


def chat_prompt(processor, prompt: str) -> str:
    """The model's chat template applied to one user turn (a video, then `prompt`), ready for the answer.

    Args:
        processor: the model's processor (or tokenizer) with a chat template.
        prompt: the user's text.
    """
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class GenerationBackend(ABC):
    """Turns a batch of requests into answers, in order.

    The work is split in two so the accelerator never waits for the CPU: `prepare` (decoding clips, building
    model inputs) runs in a background thread for the next batch while `generate_prepared` runs the model on
    the current one.
    """

    #: model id and revision recorded with every answer, e.g. `Qwen/Qwen2.5-VL-7B-Instruct@main+adapter`
    generator: str = ""

    def prepare(self, requests: Sequence[GenerationRequest]) -> Any:
        """CPU-side work for a batch (thread-safe); its result goes to `generate_prepared`."""
        return list(requests)

    @abstractmethod
    def generate_prepared(self, prepared: Any) -> list[str]:
        """The answers for a prepared batch, in request order."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self.generate_prepared(self.prepare(requests))


def _chunk_files(output_dir: Path, name: str, rank: int | None = None) -> list[Path]:
    pattern = f"{name}-rank{rank:03d}-*.parquet" if rank is not None else f"{name}-rank*-*.parquet"
    return sorted(output_dir.glob(pattern))


def read_generations(output_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """Every finished answer of a generation pass, from all ranks, in (id, attempt) order."""
    rows = []
    for path in _chunk_files(Path(output_dir), name):
        rows.extend(pq.read_table(str(path)).to_pylist())
    unique = {(r["id"], r["attempt"]): r for r in rows}
    return [unique[k] for k in sorted(unique)]


def answered_keys(output_dir: str | Path, name: str) -> set[tuple[str, str]]:
    """(id, attempt) of every finished answer of a pass (reads only those two columns)."""
    keys: set[tuple[str, str]] = set()
    for path in _chunk_files(Path(output_dir), name):
        table = pq.read_table(str(path), columns=["id", "attempt"])
        keys.update(zip(table.column("id").to_pylist(), table.column("attempt").to_pylist()))
    return keys


def merge_generations(output_dir: str | Path, name: str) -> Path:
    """Write every rank's answers of a pass as one file, `<output_dir>/<name>.parquet`, in (id, attempt) order."""
    path = Path(output_dir) / f"{name}.parquet"
    rows = read_generations(output_dir, name)
    with ParquetRowWriter(path, GENERATION_FEATURES, batch_size=max(len(rows), 1)) as writer:
        writer.write_all(rows)
    return path


def _batches(requests: Sequence[GenerationRequest], size: int) -> Iterator[list[GenerationRequest]]:
    # Similar prompt lengths in one batch waste less padding.
    ordered = sorted(requests, key=lambda r: len(r.prompt))
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]


def _prefetched(
    batches: Iterator[tuple[int, list[GenerationRequest]]], backend: GenerationBackend, pool: ThreadPoolExecutor
) -> Iterator[tuple[int, list[GenerationRequest], Any]]:
    """(chunk, batch, prepared) triples, preparing the next batch in `pool` while the caller runs the current one."""
    pending = None
    for chunk, batch in batches:
        future = pool.submit(backend.prepare, batch)
        if pending is not None:
            yield pending[0], pending[1], pending[2].result()
        pending = (chunk, batch, future)
    if pending is not None:
        yield pending[0], pending[1], pending[2].result()


def run_generation(
    requests: Sequence[GenerationRequest],
    backend: GenerationBackend,
    output_dir: str | Path,
    name: str,
    settings: GenerationSettings,
    rank: int | None = None,
    world_size: int | None = None,
) -> int:
    """Answer the requests this rank owns that have no answer on disk yet; returns how many were answered now.

    Args:
        requests: all requests of the pass (every rank passes the same list).
        backend: the model.
        output_dir: where the chunk files go.
        name: the pass name (`direct`, `rationalized`, `eval`), the prefix of the chunk files.
        settings: batch and chunk sizes.
        rank, world_size: this process's share; read from the environment when not given, in which case all
            processes of the launch wait for each other before planning and after answering.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    env_rank, env_world = world_from_env()
    # Barriers only when the split comes from the launcher: a caller passing its own rank coordinates itself.
    launched = rank is None and world_size is None and env_world > 1
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if launched:
        init_distributed()
    done = answered_keys(output_dir, name)
    if launched:
        # Every rank must plan from the same finished set, before any rank adds to it.
        wait_for_everyone()
    todo = [r for r in sorted(requests, key=lambda r: r.key) if r.key not in done]
    chunks = [todo[i : i + settings.chunk_size] for i in range(0, len(todo), settings.chunk_size)]
    mine = chunks[rank::world_size]
    count = sum(len(c) for c in mine)
    if not count:
        logger.info("%s (rank %d): nothing to answer (%d already done)", name, rank, len(done))
        if launched:
            wait_for_everyone()
        return 0
    logger.info(
        "%s (rank %d/%d): %d to answer in %d chunks, %d already done",
        name,
        rank,
        world_size,
        count,
        len(mine),
        len(done),
    )
    next_chunk = len(_chunk_files(output_dir, name, rank))
    progress = tqdm(total=count, desc=f"generate {name}", disable=rank != 0)
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vstar-prepare")
    batches = ((i, batch) for i, chunk in enumerate(mine) for batch in _batches(chunk, settings.batch_size))
    rows: list[dict[str, Any]] = []
    for chunk, batch, prepared in _prefetched(batches, backend, prefetch):
        answers = backend.generate_prepared(prepared)
        rows += [
            {
                "id": r.id,
                "attempt": r.attempt,
                "question": r.question,
                "prompt": r.prompt,
                "answer": a,
                "generator": backend.generator,
            }
            for r, a in zip(batch, answers, strict=True)
        ]
        progress.update(len(batch))
        if len(rows) == len(mine[chunk]):
            path = output_dir / f"{name}-rank{rank:03d}-{next_chunk:05d}.parquet"
            with ParquetRowWriter(path, GENERATION_FEATURES, batch_size=len(rows)) as writer:
                writer.write_all(rows)
            rows, next_chunk = [], next_chunk + 1
    prefetch.shutdown()
    progress.close()
    if launched:
        wait_for_everyone()  # callers read every rank's answers next
    return count


def get_backend(settings: GenerationSettings, model: str, adapter: str | None = None, **kwargs) -> GenerationBackend:
    """Build the configured backend for a model (and optional adapter)."""
    import vstar.generate  # noqa: F401  (registers the built-in backends)

    return BACKENDS.get(settings.backend)(model=model, adapter=adapter, settings=settings, **kwargs)
