"""The generation stage: answer prompts about clips with a backend, writing results incrementally.

Results go to Parquet chunk files (`<name>-rank<r>-<n>.parquet`), each written whole and renamed into place,
so a run killed at any point keeps every finished chunk and a re-run skips the requests already answered.

Saved answers are reused only for the same pass: `<name>-generation_key.json` beside the chunks records the
model and adapter (a Hub commit, or a hash of a local folder's weight and config files), the settings that change
answers and a digest of the requests. A pass started with anything else moves the old answers aside (to
`replaced/<name>-<time>/`), logs which fields differ, and answers afresh.

A clip that cannot be read (missing file, undecodable video), and a request the backend could not get answered
(a teacher server's 4xx, or 429/5xx/timeouts past the retries: `RequestFailed`), is skipped and reported, never
fatal to the pass: logged with its id and reason, and listed in `<name>-skipped-rank<r>.json` with its `kind`
(`read_skipped`); it has no row among the answers and is tried again by the next run of the pass.

A request without a video is a text-only chat turn; text-only and video requests can share a pass.

The unanswered requests, in id order, are cut into chunks of `chunk_size`; under `torchrun` / `accelerate launch`
rank r answers chunks r, r + world_size, ... Within a chunk, batches group similar prompt lengths. A chunk's
batches depend only on the request list and the settings, never on the number of processes or on where an
earlier run stopped (finished chunks are whole, so the rest splits into the same chunks again): 1 process,
8 processes and a run resumed with another number of processes give the same answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from vstar.distributed import init_distributed, wait_for_everyone, world_from_env
from vstar.io import ParquetRowWriter
from vstar.registry import Registry
from vstar.schema import GENERATION_FEATURES
from vstar.video import SampledClip, VideoDecodeError, sample_frames

logger = logging.getLogger(__name__)

BACKENDS: Registry = Registry("generation backend")


@dataclass
class GenerationRequest:
    """One prompt, about one clip or about text alone.

    A request with a video is one user turn holding the clip's sampled frames, then `prompt`. A request whose
    `video` is `None` is a text-only chat turn (no video placeholder, nothing decoded): summaries of earlier
    answers, questions written from a description. Both kinds can share a pass and a batch.

    Which frames a model sees: the window `start`..`end` of `video`, sampled as `GenerationSettings` says
    (`num_frames` per window, or `video_fps` frames per second). A caller that wants specific windows at a frame
    rate (every 10 s window at 1 fps) makes one request per window with its `start`/`end` and runs the pass with
    `video_fps` set; the requests can all point at the same file.

    Args:
        id: the clip id (any id unique within the pass, with `attempt`).
        attempt: what is asked, e.g. `direct` or `rationalized` (with the label as a hint); with `id`, the key
            of the answer.
        question: the question as it is stored in training data (never with the hint).
        prompt: the full user text sent to the model.
        video: the `datasets.Video(decode=False)` entry (path and/or bytes), a function that returns it when
            the clip is decoded (so a pass over embedded videos does not hold every clip's bytes), or `None` for
            a text-only request.
        start, end: the clip window in seconds (`None`: the start / end of the video).
        system: a system prompt sent before the user turn, or `None` for none (the chat template's default).
        max_new_tokens: this request's longest answer in tokens, or `None` for `GenerationSettings.max_new_tokens`.
        sample: which of several answers to the same prompt this is (0, 1, ...; see `build_requests`'
            `num_samples`); with `id` and `attempt`, the key of the answer. Backends answer the samples of one
            prompt from one decoded clip.
    """

    id: str
    attempt: str
    question: str
    prompt: str
    video: Any = None
    start: float | None = None
    end: float | None = None
    system: str | None = None
    max_new_tokens: int | None = None
    sample: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return self.id, self.attempt, self.sample

    @property
    def text_only(self) -> bool:
        return self.video is None


class RequestFailed(Exception):
    """A request the backend could not get answered (a teacher server refused it, or kept failing).

    A backend returns it in place of the answer; `run_generation` then skips the request and reports it with
    its `kind` and reason, like a clip that cannot be read, and the next run of the pass asks it again.

    Args:
        kind: what failed, e.g. `client_error` (a 4xx), `rate_limited`, `server_error`, `timeout`,
            `connection_error`, `bad_response` (a 200 without a completion).
        reason: one line saying what happened (never a credential).
        status: the HTTP status, when there was one.
    """

    def __init__(self, kind: str, reason: str, status: int | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.status = kind, reason, status

    def __str__(self) -> str:
        return self.reason


@dataclass
class GenerationSettings:
    """How answers are generated (shared by every backend)."""

    backend: str = field(
        default="transformers",
        metadata={"help": "Generation backend: transformers, vllm, or endpoint (an OpenAI-compatible server)."},
    )
    batch_size: int = field(
        default=16,
        metadata={"help": "Prompts per generate call, each with all its samples (several answers per clip)."},
    )
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
    endpoint_url: str | None = field(
        default=None,
        metadata={"help": "endpoint: base URL of an OpenAI-compatible server (e.g. http://localhost:8000/v1)."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "endpoint: environment variable holding the API key (the key is never written or logged)."},
    )
    max_concurrency: int = field(default=8, metadata={"help": "endpoint: requests in flight at once."})
    request_timeout: float = field(default=120.0, metadata={"help": "endpoint: seconds before a request is retried."})
    max_retries: int = field(
        default=5, metadata={"help": "endpoint: retries of a failed request (5xx, 429, timeouts), with backoff."}
    )
    image_format: str = field(
        default="jpeg", metadata={"help": "endpoint: how frames are sent: jpeg (smaller) or png (lossless)."}
    )


def distinct_prompts(requests: Sequence[GenerationRequest]) -> tuple[list[GenerationRequest], list[int]]:
    """The requests that differ in what the model sees (samples of one prompt collapse), and for each request the
    index of its distinct one."""
    distinct: list[GenerationRequest] = []
    index: dict[tuple, int] = {}
    owners = []
    for request in requests:
        key = (request.id, request.attempt, request.prompt, request.system, request.start, request.end,
               request.text_only)  # fmt: skip
        if key not in index:
            index[key] = len(distinct)
            distinct.append(request)
        owners.append(index[key])
    return distinct, owners


def sample_clip(request: GenerationRequest, settings: GenerationSettings) -> SampledClip:
    """The frames of a request's clip window, as the settings ask (`num_frames` or `video_fps`)."""
    if request.video is None:
        raise ValueError(f"Request {request.id!r} ({request.attempt}) is text-only: it has no clip to sample.")
    video = request.video() if callable(request.video) else request.video
    return sample_frames(
        video, num_frames=settings.num_frames, fps=settings.video_fps, start=request.start, end=request.end
    )


def chat_messages(prompt: str, video: bool = True, system: str | None = None) -> list[dict[str, Any]]:
    """The chat messages of one request: an optional system turn, then a user turn (a video, then `prompt`).

    Args:
        prompt: the user's text.
        video: whether the user turn holds the clip (`False` for a text-only request).
        system: the system prompt, or `None` for none.
    """
    content = [{"type": "video"}] if video else []
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return messages


def chat_prompt(processor, prompt: str, video: bool = True, system: str | None = None) -> str:
    """The model's chat template applied to one user turn (a video, then `prompt`), ready for the answer.

    Args:
        processor: the model's processor (or tokenizer) with a chat template.
        prompt: the user's text.
        video: whether the turn holds the clip's placeholder (`False` for a text-only request).
        system: a system prompt before the user turn, or `None`.
    """
    messages = chat_messages(prompt, video=video, system=system)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def request_prompt(processor, request: GenerationRequest) -> str:
    """`chat_prompt` for a request: with the video placeholder unless it is text-only, with its system prompt."""
    return chat_prompt(processor, request.prompt, video=not request.text_only, system=request.system)


def max_new_tokens(request: GenerationRequest, settings: GenerationSettings) -> int:
    """The request's own answer length limit, else the settings'."""
    return settings.max_new_tokens if request.max_new_tokens is None else request.max_new_tokens


class GenerationBackend(ABC):
    """Turns a batch of requests into answers, in order.

    The work is split in two so the accelerator never waits for the CPU: `prepare` (decoding clips, building
    model inputs) runs in a background thread for the next batch while `generate_prepared` runs the model on
    the current one.
    """

    #: model id and revision recorded with every answer, e.g. `Qwen/Qwen2.5-VL-7B-Instruct@main+adapter`
    generator: str = ""
    #: the base model and the adapter as given (Hub id or directory), which key the saved answers
    model_name: str | None = None
    adapter_name: str | None = None

    def prepare(self, requests: Sequence[GenerationRequest]) -> Any:
        """CPU-side work for a batch (thread-safe); its result goes to `generate_prepared`."""
        return list(requests)

    @abstractmethod
    def generate_prepared(self, prepared: Any) -> list[str | RequestFailed]:
        """The answers for a prepared batch, in request order; a request that could not be answered gets a
        `RequestFailed` in place of its answer (it is then skipped and reported, see `run_generation`)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str | RequestFailed]:
        return self.generate_prepared(self.prepare(requests))

    def use_settings(self, settings: GenerationSettings) -> None:
        """Answer the next batches with the answer settings of `settings` (`KEY_SETTINGS`: temperature, top-p,
        seed, answer length, frames), keeping the engine's own (batching, memory, parallelism).

        `run_generation` calls it, so one loaded model serves passes that decode differently, e.g. sampled
        generation passes and a greedy held-out evaluation.
        """
        current = getattr(self, "settings", None)
        if isinstance(current, GenerationSettings):
            self.settings = replace(current, **{name: getattr(settings, name) for name in KEY_SETTINGS})

    def close(self) -> None:
        """Free the model and its accelerator memory (before training in the same process); the backend is not
        used afterwards."""
        release_accelerator_memory()

    def shard(self, rank: int, world_size: int) -> tuple[int, int, bool]:
        """`(shard, num_shards, writes)`: which share of the chunks this process answers, and whether it writes
        them. One share per process by default; a backend whose engine spans several processes (vLLM's tensor
        parallel groups under a launch) gives all of them the engine's share and lets one of them write it.

        Args:
            rank, world_size: this process's rank and the number of processes, as `run_generation` has them.
        """
        return rank, world_size, True


def release_accelerator_memory() -> None:
    """Collect dropped models and hand their cached GPU memory back to the device (a no-op on the CPU)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# Settings that change the answers; batch and chunk sizes, decoding threads and engine sizing do not.
KEY_SETTINGS = ("max_new_tokens", "temperature", "top_p", "num_frames", "video_fps", "seed")
# Files of a model or adapter folder that decide its answers (weights, configs, tokenizer, chat template).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".jinja", ".txt", ".model", ".tiktoken")
NOT_WEIGHTS = ("README.md", "train_summary.json")
# Folders up to this size are hashed whole; above it, files over `LARGE_FILE` are identified by size and mtime
# (hashing the 15 GB of a 7B model on every pass would take minutes).
FULL_HASH_LIMIT = 2 << 30
LARGE_FILE = 64 << 20
# A clip that cannot be read: skipped and reported, the rest of the pass goes on.
CLIP_ERRORS = (VideoDecodeError, FileNotFoundError)
# The `kind` of a skipped request whose clip could not be read (other kinds come from `RequestFailed`).
UNREADABLE_CLIP = "unreadable_clip"


def weights_fingerprint(model: str | None, config_file: str = "config.json") -> str | None:
    """What identifies a model's or adapter's weights: a content hash of a local folder, or a Hub commit sha.

    Args:
        model: a directory or a Hub id (`None` gives `None`).
        config_file: a file every snapshot of the repo has, to find the cached commit (`adapter_config.json` for
            adapters).
    """
    if model is None:
        return None
    path = Path(model)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in NOT_WEIGHTS
        )
        whole = sum(p.stat().st_size for p in files) <= FULL_HASH_LIMIT
        digest = hashlib.sha256()
        for file in files:
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0".encode())
            if whole or stat.st_size <= LARGE_FILE:
                with file.open("rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(block)
            else:
                digest.update(str(stat.st_mtime_ns).encode())
        return f"sha256:{digest.hexdigest()}"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, config_file)
    if isinstance(cached, str):  # .../snapshots/<commit>/<file>
        return f"commit:{Path(cached).parent.name}"
    try:
        from huggingface_hub import HfApi

        return f"commit:{HfApi().model_info(model).sha}"
    except Exception as error:  # noqa: BLE001  (an identity is best effort; the name still keys the answers)
        logger.warning("Cannot resolve the revision of %s (%s): its answers are keyed by name only.", model, error)
        return None


def _video_identity(video: Any) -> Any:
    if video is None:
        return "text"
    if callable(video):  # read lazily from the source dataset: the clip id stands for it
        return None
    if isinstance(video, dict):
        data = video.get("bytes")
        return [video.get("path"), hashlib.sha256(data).hexdigest() if data else None]
    if isinstance(video, bytes):
        return [None, hashlib.sha256(video).hexdigest()]
    return [str(video), None]


def requests_digest(requests: Sequence[GenerationRequest]) -> str:
    """A digest of what the requests ask (ids, questions, prompts, videos, windows, system prompts and answer
    limits), in any order."""
    digest = hashlib.sha256()
    for r in sorted(requests, key=lambda r: r.key):
        item = [r.id, r.attempt, r.question, r.prompt, _video_identity(r.video), r.start, r.end]
        if r.sample:  # single-answer passes keep the digest of their saved answers
            item.append(r.sample)
        # Appended only when set, so the digests of requests without them (and their saved answers) stay valid.
        if r.system is not None or r.max_new_tokens is not None:
            item += [r.system, r.max_new_tokens]
        digest.update(json.dumps(item, default=str).encode())
    return digest.hexdigest()


def generation_key(
    backend: GenerationBackend, settings: GenerationSettings, requests: Sequence[GenerationRequest]
) -> dict[str, Any]:
    """What a pass's answers depend on: model, adapter, their revisions, the answer settings and the requests.

    Args:
        backend: the model (its `model_name` and `adapter_name`, else its `generator`).
        settings: the generation settings.
        requests: every request of the pass.
    """
    identity = getattr(backend, "_vstar_identity", None)
    if identity is None:  # hashing a folder once per loaded model is enough
        model = backend.model_name or backend.generator
        identity = {
            "model": model,
            "model_revision": weights_fingerprint(backend.model_name),
            "adapter": backend.adapter_name,
            "adapter_revision": weights_fingerprint(backend.adapter_name, "adapter_config.json"),
        }
        backend._vstar_identity = identity
    return {
        **identity,
        **{name: getattr(settings, name) for name in KEY_SETTINGS},
        "requests": requests_digest(requests),
        "num_requests": len(requests),
    }


def _key_path(output_dir: Path, name: str) -> Path:
    return output_dir / f"{name}-generation_key.json"


def _skip_files(output_dir: Path, name: str) -> list[Path]:
    return sorted(output_dir.glob(f"{name}-skipped-rank*.json"))


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def _key_changes(saved: dict[str, Any] | None, key: dict[str, Any]) -> list[str]:
    if saved is None:
        return ["no generation key (answers of an older vstar, or of an unknown model)"]
    key = json.loads(json.dumps(key, default=str))
    return [name for name in key if saved.get(name) != key[name]]


def _read_key(output_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        saved = json.loads(_key_path(output_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def reconcile_generation_key(output_dir: str | Path, name: str, key: dict[str, Any]) -> list[str]:
    """Keep the saved answers of pass `name` only if they were made with `key`; returns the fields that differed.

    Answers made otherwise (another model, adapter, revision, setting or request list) are moved to
    `output_dir/replaced/<name>-<time>/`, never mixed with new ones; then `key` is recorded (atomically).

    Args:
        output_dir: the pass's chunk folder.
        name: the pass name.
        key: `generation_key(...)` of the pass about to run.
    """
    output_dir = Path(output_dir)
    saved_files = [
        *_chunk_files(output_dir, name),
        *_skip_files(output_dir, name),
        *[p for p in (output_dir / f"{name}.parquet",) if p.exists()],
    ]
    saved = _read_key(output_dir, name)
    changes = _key_changes(saved, key) if saved is not None or saved_files else []
    if changes and saved_files:
        (output_dir / "replaced").mkdir(exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-", dir=output_dir / "replaced"))
        for path in [*saved_files, *[p for p in (_key_path(output_dir, name),) if p.exists()]]:
            path.rename(aside / path.name)
        detail = ", ".join(
            f"{field_} {saved.get(field_)!r} -> {key[field_]!r}"
            if saved is not None and field_ != "requests"
            else field_
            for field_ in changes
        )
        logger.warning(
            "%s: the saved %s answers were made differently (%s); moved them to %s and answering afresh.",
            output_dir,
            name,
            detail,
            aside,
        )
    if changes or saved is None:
        _write_json(_key_path(output_dir, name), key)
    return changes


def read_skipped(output_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """The requests of pass `name` that were skipped and have no answer, in (id, attempt) order.

    Each is `{"id", "attempt", "video", "kind", "error", "status"}`: `kind` is `unreadable_clip` for a clip that
    cannot be read, else the `RequestFailed.kind` of a request the backend could not get answered (`client_error`,
    `rate_limited`, `server_error`, `timeout`, `connection_error`, `bad_response`); `error` the reason; `status`
    the HTTP status when there was one; `video` the clip's file (`None` for a text-only request).
    """
    output_dir = Path(output_dir)
    answered = answered_keys(output_dir, name)
    skipped = {}
    for path in _skip_files(output_dir, name):
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in entries:
            key = (entry["id"], entry["attempt"], entry.get("sample", 0))
            if key not in answered:
                skipped[key] = {"kind": UNREADABLE_CLIP, "status": None, **entry}
    return [skipped[k] for k in sorted(skipped)]


def _video_file(video: Any) -> str | None:
    if video is None:
        return None
    if callable(video):  # a lazily read entry: read it to name the file
        try:
            video = video()
        except Exception:  # noqa: BLE001  (naming the file must not fail the report)
            return "embedded video"
    if isinstance(video, dict):
        return str(video.get("path") or "embedded bytes")
    if isinstance(video, (str, os.PathLike)):
        return str(video)
    return "embedded video"


def _chunk_files(output_dir: Path, name: str, rank: int | None = None) -> list[Path]:
    pattern = f"{name}-rank{rank:03d}-*.parquet" if rank is not None else f"{name}-rank*-*.parquet"
    return sorted(output_dir.glob(pattern))


def read_generations(output_dir: str | Path, name: str) -> list[dict[str, Any]]:
    """Every finished answer of a generation pass, from all ranks, in (id, attempt, sample) order."""
    rows = []
    for path in _chunk_files(Path(output_dir), name):
        rows.extend({"sample": 0, **r} for r in pq.read_table(str(path)).to_pylist())
    unique = {(r["id"], r["attempt"], r["sample"]): r for r in rows}
    return [unique[k] for k in sorted(unique)]


def answered_keys(output_dir: str | Path, name: str) -> set[tuple[str, str, int]]:
    """(id, attempt, sample) of every finished answer of a pass (reads only those columns)."""
    keys: set[tuple[str, str, int]] = set()
    for path in _chunk_files(Path(output_dir), name):
        names = set(pq.read_schema(str(path)).names)
        table = pq.read_table(str(path), columns=[c for c in ("id", "attempt", "sample") if c in names])
        # Answers written before several samples per prompt existed are sample 0.
        samples = table.column("sample").to_pylist() if "sample" in names else [0] * table.num_rows
        keys.update(zip(table.column("id").to_pylist(), table.column("attempt").to_pylist(), samples))
    return keys


def merge_generations(output_dir: str | Path, name: str) -> Path:
    """Write every rank's answers of a pass as one file, `<output_dir>/<name>.parquet`, in (id, attempt) order."""
    path = Path(output_dir) / f"{name}.parquet"
    rows = read_generations(output_dir, name)
    with ParquetRowWriter(path, GENERATION_FEATURES, batch_size=max(len(rows), 1)) as writer:
        writer.write_all(rows)
    return path


def _skip_entry(request: GenerationRequest, kind: str, error: str, status: int | None) -> dict[str, Any]:
    return {
        "id": request.id,
        "attempt": request.attempt,
        "sample": request.sample,
        "video": _video_file(request.video),
        "kind": kind,
        "error": error,
        "status": status,
    }


def _batches(requests: Sequence[GenerationRequest], size: int) -> Iterator[list[GenerationRequest]]:
    """Batches of `size` prompts, each with all its samples (`GenerationRequest.sample`): a backend answers the
    samples of one prompt from one decoded clip, in one call."""
    # Similar prompt lengths in one batch waste less padding; the sort is stable, so samples stay together.
    ordered = sorted(requests, key=lambda r: len(r.prompt))
    prompts: list[list[GenerationRequest]] = []
    for request in ordered:
        if prompts and prompts[-1][0].id == request.id and prompts[-1][0].attempt == request.attempt:
            prompts[-1].append(request)
        else:
            prompts.append([request])
    for i in range(0, len(prompts), size):
        yield [request for prompt in prompts[i : i + size] for request in prompt]


def _prepare_skipping(
    backend: GenerationBackend, batch: list[GenerationRequest]
) -> tuple[list[GenerationRequest], Any, list[tuple[GenerationRequest, BaseException]]]:
    """(kept requests, their prepared batch, skipped requests with their errors) for one batch.

    Only when the batch fails on a clip is each request prepared alone, to find the clips that cannot be read.
    """
    try:
        return batch, backend.prepare(batch), []
    except CLIP_ERRORS:
        pass
    kept, skipped = [], []
    for request in batch:
        try:
            backend.prepare([request])
        except CLIP_ERRORS as error:
            skipped.append((request, error))
        else:
            kept.append(request)
    return kept, backend.prepare(kept) if kept else None, skipped


def _prefetched(
    batches: Iterator[tuple[int, list[GenerationRequest]]], backend: GenerationBackend, pool: ThreadPoolExecutor
) -> Iterator[tuple[int, list[GenerationRequest], Any, list[tuple[GenerationRequest, BaseException]]]]:
    """(chunk, kept, prepared, skipped) for each batch, preparing the next batch in `pool` while the caller runs
    the current one."""
    pending = None
    for chunk, batch in batches:
        future = pool.submit(_prepare_skipping, backend, batch)
        if pending is not None:
            yield pending[0], *pending[1].result()
        pending = (chunk, future)
    if pending is not None:
        yield pending[0], *pending[1].result()


def run_generation(
    requests: Sequence[GenerationRequest],
    backend: GenerationBackend,
    output_dir: str | Path,
    name: str,
    settings: GenerationSettings,
    rank: int | None = None,
    world_size: int | None = None,
    description: str | None = None,
) -> int:
    """Answer the requests this rank owns that have no answer on disk yet; returns how many were answered now.

    Saved answers of another model, adapter, revision, settings or request list are moved aside first (see
    `reconcile_generation_key`); clips that cannot be read, and requests the backend returns a `RequestFailed`
    for, are skipped and listed with the reason (see `read_skipped`), and asked again by the next run.

    Args:
        requests: all requests of the pass (every rank passes the same list).
        backend: the model.
        output_dir: where the chunk files go.
        name: the pass name (`direct`, `rationalized`, `eval`), the prefix of the chunk files.
        settings: batch and chunk sizes.
        rank, world_size: this process's share; read from the environment when not given, in which case all
            processes of the launch wait for each other before planning and after answering.
        description: what the progress bar and the log call the pass (default: `<name> answers`).
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
    backend.use_settings(settings)
    if rank == 0:
        reconcile_generation_key(output_dir, name, generation_key(backend, settings, requests))
    elif not launched:
        # A caller that splits the work itself starts rank 0 first; a key of another pass is not this rank's to
        # replace.
        key = generation_key(backend, settings, requests)
        saved = _read_key(output_dir, name)
        if saved is None:
            _write_json(_key_path(output_dir, name), key)
        elif _key_changes(saved, key):
            raise ValueError(
                f"{output_dir} holds {name} answers made differently ({', '.join(_key_changes(saved, key))}); "
                "run rank 0 first (it moves them aside), or use another output directory."
            )
    if launched:
        wait_for_everyone()  # rank 0 has set aside answers made differently
    done = answered_keys(output_dir, name)
    if launched:
        # Every rank must plan from the same finished set, before any rank adds to it.
        wait_for_everyone()
    todo = [r for r in sorted(requests, key=lambda r: r.key) if r.key not in done]
    chunks = [todo[i : i + settings.chunk_size] for i in range(0, len(todo), settings.chunk_size)]
    # Chunks go to shards (one per process, or one per engine spanning several); files are named by shard.
    process_rank = rank
    rank, world_size, writes = backend.shard(rank, world_size)
    mine = chunks[rank::world_size]
    count = sum(len(c) for c in mine)
    # Name the process only when there are several.
    what = (description or f"{name} answers") + (f" (process {rank + 1} of {world_size})" if world_size > 1 else "")
    if not count:
        logger.info("%s: nothing to answer (%d already done)", what, len(done))
        if launched:
            wait_for_everyone()
        return 0
    logger.info("%s: %d to answer in %d chunks, %d already done", what, count, len(mine), len(done))
    next_chunk = len(_chunk_files(output_dir, name, rank))
    progress = tqdm(total=count, desc=what, unit="clip", disable=process_rank != 0)
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vstar-prepare")
    batches = ((i, batch) for i, chunk in enumerate(mine) for batch in _batches(chunk, settings.batch_size))
    rows: list[dict[str, Any]] = []
    skips: list[dict[str, Any]] = []
    handled = answered = 0  # requests of the current chunk answered or skipped; answers written this run
    skip_file = output_dir / f"{name}-skipped-rank{rank:03d}.json"
    unreadable = failed = 0
    for chunk, batch, prepared, skipped in _prefetched(batches, backend, prefetch):
        answers = backend.generate_prepared(prepared) if batch else []
        if len(answers) != len(batch):
            raise RuntimeError(f"The {backend.generator} backend returned {len(answers)} answers for {len(batch)}.")
        for request, error in skipped:
            logger.warning(
                "Skipping clip %s (%s, %s): %s", request.id, request.attempt, _video_file(request.video), error
            )
            skips.append(_skip_entry(request, UNREADABLE_CLIP, str(error), None))
            unreadable += 1
        for request, answer in zip(batch, answers):
            if isinstance(answer, RequestFailed):
                logger.warning(
                    "Skipping request %s (%s): %s: %s", request.id, request.attempt, answer.kind, answer.reason
                )
                skips.append(_skip_entry(request, answer.kind, answer.reason, answer.status))
                failed += 1
        handled += len(batch) + len(skipped)
        rows += [
            {
                "id": r.id,
                "attempt": r.attempt,
                "sample": r.sample,
                "question": r.question,
                "prompt": r.prompt,
                "answer": a,
                "generator": backend.generator,
            }
            for r, a in zip(batch, answers, strict=True)
            if not isinstance(a, RequestFailed)
        ]
        progress.update(len(batch) + len(skipped))
        if handled == len(mine[chunk]):
            if rows:
                if writes:
                    path = output_dir / f"{name}-rank{rank:03d}-{next_chunk:05d}.parquet"
                    with ParquetRowWriter(path, GENERATION_FEATURES, batch_size=len(rows)) as writer:
                        writer.write_all(rows)
                answered, next_chunk = answered + len(rows), next_chunk + 1
            if skips and writes:
                _write_json(skip_file, skips)
            rows, handled = [], 0
    prefetch.shutdown()
    progress.close()
    if unreadable:
        logger.warning(
            "%s: %d of %d clips could not be read and were skipped (listed in %s)", what, unreadable, count, skip_file
        )
    if failed:
        logger.warning(
            "%s: %d of %d requests could not be answered and were skipped (listed in %s)",
            what,
            failed,
            count,
            skip_file,
        )
    if writes and not skips and skip_file.exists():
        skip_file.unlink()  # every request it listed was answered this time
    if launched:
        wait_for_everyone()  # callers read every rank's answers next
    return answered


def get_backend(settings: GenerationSettings, model: str, adapter: str | None = None, **kwargs) -> GenerationBackend:
    """Build the configured backend for a model (and optional adapter)."""
    import vstar.generate  # noqa: F401  (registers the built-in backends)
    from vstar.lineage import check_adapter_base

    check_adapter_base(model, adapter)
    return BACKENDS.get(settings.backend)(model=model, adapter=adapter, settings=settings, **kwargs)


def build_requests(
    task, rows: Iterable[Mapping[str, Any]], attempt: str, seed: int, num_samples: int = 1
) -> list[GenerationRequest]:
    """The requests of one pass: a question per clip, drawn deterministically from `seed` and the clip id.

    The one place prompts are built: the loop, `vstar generate` and evaluation all call it.

    Args:
        task: the task (`vstar.tasks.base.Task`) whose questions and prompts are asked.
        rows: source rows with `id`, `video` (entry or a function returning it), `start`, `end` and, for
            `rationalized`, the task's label columns.
        attempt: `direct` and `eval` ask the question; `rationalized` adds the row's label as a hint.
        seed: the question draw's seed.
        num_samples: answers asked per clip (samples 0 .. n-1 of the same prompt; sampled with the pass's
            temperature, so useful with `temperature > 0`).
    """
    from vstar.tasks.base import draw_questions

    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, not {num_samples}.")
    if attempt not in ("direct", "rationalized", "eval"):
        raise ValueError(f"attempt must be `direct`, `rationalized` or `eval`, not {attempt!r}.")
    rows = list(rows)
    questions = draw_questions(task, [r["id"] for r in rows], seed=seed, rows=rows)
    requests = []
    for row, question in zip(rows, questions):
        if attempt == "rationalized":
            prompt = task.rationalization_prompt(question, task.label(row))
        else:
            prompt = task.direct_prompt(question)
        requests.extend(
            GenerationRequest(
                row["id"], attempt, question, prompt, row["video"], row.get("start"), row.get("end"), sample=sample
            )
            for sample in range(num_samples)
        )
    return requests
