"""The vLLM backend: continuous batching on one or more GPUs, frames decoded by `vstar.video`.

vLLM is an optional extra (`pip install 'vstar[vllm]'`, CUDA GPUs only); importing this module never imports it,
only building the backend does. Clips are decoded and prompts rendered on the CPU (`prepare`, in a background
thread) and handed to vLLM as frames plus their timing, so the model sees the same frames and frame rate as with
the transformers backend.

```bash
vstar generate --model Qwen/Qwen2.5-VL-7B-Instruct --adapter runs/k700/cycle-1/model --dataset runs/k700/source \
    --task action_recognition --output_dir runs/gen --backend vllm --tensor_parallel_size 2 --batch_size 256
```

In a recipe (`vstar cycle`):

```yaml
generation_backend: vllm
generation_batch_size: 256
```

Adapters are applied in one of two ways (`lora_mode`):

- `request` (default): the engine serves the base weights with LoRA enabled and every prompt carries a
  `LoRARequest`; no extra disk, somewhat slower decoding. The adapter's rank must not exceed `max_lora_rank`.
- `merge`: the adapter is merged into a copy of the base weights on the CPU first (cached in
  `<adapter>-merged-for-vllm`, reused while the adapter is unchanged) and the engine loads that copy; fastest
  decoding, and it works for adapters vLLM cannot serve as LoRA (e.g. ones that train whole modules). Each
  adapter gets its own full-size copy: delete the copies of cycles you no longer need.

Launch it as one process (not under `torchrun`): vLLM starts its own workers for the `tensor_parallel_size` GPUs
and batches continuously, so one engine keeps them busy; larger `batch_size`s give it more to schedule.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from vstar.distributed import is_distributed
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    max_new_tokens,
    request_prompt,
    sample_clip,
    weights_fingerprint,
)
from vstar.video import SampledClip

logger = logging.getLogger(__name__)

LORA_MODES = ("request", "merge")
MERGED_SUFFIX = "-merged-for-vllm"
MERGE_MARKER = "vstar-merge.json"
INSTALL_HINT = (
    "The vllm generation backend needs vLLM, an optional extra: pip install 'vstar[vllm]' (it needs a CUDA GPU). "
    "The default backend works on any machine: `generation_backend: transformers` in a recipe, "
    "`--backend transformers` on the command line."
)


def import_vllm() -> SimpleNamespace:
    """The parts of vLLM the backend uses (`LLM`, `SamplingParams`, `LoRARequest`).

    Raises:
        ImportError: with install instructions, when vLLM is not installed.
    """
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as err:
        # The cause is kept in the message too: an installed vLLM that fails to import (CUDA libraries, versions)
        # ends up here as well.
        raise ImportError(f"{INSTALL_HINT} (import failed: {err})") from err
    return SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams, LoRARequest=LoRARequest)


def check_lora_mode(lora_mode: str) -> str:
    """`lora_mode` itself when it is one of `LORA_MODES`.

    Args:
        lora_mode: `request` or `merge`.

    Raises:
        ValueError: naming the accepted values.
    """
    if lora_mode not in LORA_MODES:
        raise ValueError(f"lora_mode must be one of {', '.join(LORA_MODES)}, not {lora_mode!r}.")
    return lora_mode


def sampling_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for the settings: greedy decoding when `temperature` is 0.

    Args:
        settings: the generation settings (`max_new_tokens`, `temperature`, `top_p`, `seed`).
    """
    if settings.temperature <= 0:
        return {"max_tokens": settings.max_new_tokens, "temperature": 0.0, "top_p": 1.0}
    # One seed for every prompt: each request's sample then depends only on its own prompt, never on which
    # other requests share its batch, so a resumed run draws the same answers.
    return {
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
    }


def engine_kwargs(
    model: str, settings: GenerationSettings, tokenizer: str | None = None, enable_lora: bool = False
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for a model directory (or Hub id) and the settings.

    Args:
        model: the weights the engine loads (the base model, or a merged copy).
        settings: `tensor_parallel_size`, `gpu_memory_utilization`, `max_model_len`, `max_lora_rank`, `seed`.
        tokenizer: a separate tokenizer directory, else the model's.
        enable_lora: serve LoRA adapters (`lora_mode: request`).
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "seed": settings.seed,
        # Memory for multimodal inputs is reserved per item; prompts here hold exactly one clip.
        "limit_mm_per_prompt": {"video": 1},
    }
    if tokenizer:
        kwargs["tokenizer"] = tokenizer
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    if enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=1)
    return kwargs


def video_input(clip: SampledClip) -> tuple[np.ndarray, dict[str, Any]]:
    """A clip as a vLLM video item: `(frames, metadata)`.

    The metadata holds the fields of `transformers.video_utils.VideoMetadata` (the window's frame count, the
    video's fps, the sampled frame indices), from which Qwen2.5-VL and Qwen3-VL derive the true sampled frame rate
    and timestamps; `do_sample_frames: False` keeps vLLM and the HF processor from sampling the frames again.
    Models that take no metadata ignore it.

    Args:
        clip: the sampled frames of one request.
    """
    return clip.frames, {**asdict(clip.video_metadata()), "do_sample_frames": False}


def build_prompts(
    processor,
    requests: Sequence[GenerationRequest],
    settings: GenerationSettings,
    pool: ThreadPoolExecutor | None = None,
) -> list[dict[str, Any]]:
    """vLLM prompts (`{"prompt": text, "multi_modal_data": {"video": (frames, metadata)}}`) for the requests.

    A text-only request (`video` is `None`) gets `{"prompt": text}` alone: no placeholder, nothing decoded.

    Args:
        processor: the model's processor (for its chat template).
        requests: the batch, in order.
        settings: `num_frames` or `video_fps`, the frames sampled per clip.
        pool: threads that decode the clips in parallel, or `None` to decode one by one.
    """

    def clip(request: GenerationRequest) -> SampledClip:
        return sample_clip(request, settings)

    with_video = [r for r in requests if not r.text_only]
    clips = iter(list(pool.map(clip, with_video)) if pool else [clip(r) for r in with_video])
    prompts = []
    for request in requests:
        prompt: dict[str, Any] = {"prompt": request_prompt(processor, request)}
        if not request.text_only:
            prompt["multi_modal_data"] = {"video": video_input(next(clips))}
        prompts.append(prompt)
    return prompts


def _submission_order(outputs: Sequence[Any]) -> list[Any]:
    # `LLM.generate` sorts its outputs by its request counter, i.e. by submission order. Sorting again costs
    # nothing and keeps answers paired with their requests should a version return them as they finish.
    try:
        return sorted(outputs, key=lambda output: int(output.request_id))
    except (AttributeError, TypeError, ValueError):
        return list(outputs)


def answers_from_outputs(outputs: Sequence[Any], requests: Sequence[GenerationRequest]) -> list[str]:
    """The answer texts of `LLM.generate`'s `RequestOutput`s, stripped, in the order of `requests`.

    Args:
        outputs: one `RequestOutput` per request (`.request_id`, `.outputs[0].text`).
        requests: the requests the prompts were built from, in submission order.

    Raises:
        RuntimeError: when the count differs from the requests, or a request got no completion (naming it).
    """
    if len(outputs) != len(requests):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts.")
    answers = []
    for request, output in zip(requests, _submission_order(outputs)):
        completions = getattr(output, "outputs", None)
        if not completions:
            raise RuntimeError(
                f"vLLM returned no completion for request {request.id!r} ({request.attempt}); "
                f"vLLM request id {getattr(output, 'request_id', '?')}."
            )
        answers.append(completions[0].text.strip())
    return answers


# -- adapters -------------------------------------------------------------------------------------------------


def local_adapter_dir(adapter: str) -> Path:
    """A local directory holding the adapter: `adapter` itself (absolute), or its downloaded Hub snapshot.

    Args:
        adapter: an adapter directory or Hub id.
    """
    if os.path.isdir(adapter):
        return Path(adapter).resolve()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(adapter))


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's `adapter_config.json` as a dict.

    Args:
        adapter_dir: a local PEFT adapter directory.
    """
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json; is it a PEFT adapter directory?")
    return json.loads(path.read_text())


def adapter_rank(config: dict[str, Any]) -> int:
    """The largest LoRA rank in an adapter config (its `r`, or a larger one from `rank_pattern`).

    Args:
        config: the adapter's `adapter_config.json` as a dict.
    """
    return max([int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def merged_weights_dir(adapter: str, adapter_dir: Path) -> Path:
    """Where the merged copy of an adapter is cached.

    Beside a local adapter (`<adapter>-merged-for-vllm`) rather than inside it, since the whole adapter directory
    is what gets pushed to the Hub; a Hub adapter's copy goes under `$HF_HOME/vstar`, one per adapter commit.

    Args:
        adapter: the adapter as given (directory or Hub id).
        adapter_dir: its local directory (`local_adapter_dir(adapter)`).
    """
    if os.path.isdir(adapter):
        return adapter_dir.parent / (adapter_dir.name + MERGED_SUFFIX)
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "vstar" / f"{adapter.replace('/', '--')}-{adapter_dir.name}{MERGED_SUFFIX}"


def adapter_fingerprint(base_model: str, adapter_dir: Path) -> str:
    """A digest of the base model's name and the adapter's config and weights: a changed adapter is re-merged.

    Args:
        base_model: the base model id or directory, as given.
        adapter_dir: the local adapter directory.
    """
    weights = weights_fingerprint(str(adapter_dir), "adapter_config.json")
    return hashlib.sha256(f"{base_model}\0{weights}".encode()).hexdigest()


def _is_current(merged_dir: Path, fingerprint: str) -> bool:
    try:
        return json.loads((merged_dir / MERGE_MARKER).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def merge_adapter_for_vllm(
    model: str, adapter: str, processor: str | None = None, output_dir: str | Path | None = None
) -> Path:
    """The base model with the adapter merged into its weights, plus the processor, as a model directory.

    Merged on the CPU with transformers and PEFT, written to a temporary directory and renamed into place, so the
    cache is either complete or absent; a cache made from the same base model and adapter files is reused.

    Args:
        model: the base model (directory or Hub id).
        adapter: the PEFT adapter (directory or Hub id).
        processor: the processor to save with the weights (default: the base model's).
        output_dir: where to cache the merged model (default: `merged_weights_dir`).

    Returns:
        The merged model directory.
    """
    adapter_dir = local_adapter_dir(adapter)
    output_dir = Path(output_dir) if output_dir is not None else merged_weights_dir(adapter, adapter_dir)
    fingerprint = adapter_fingerprint(model, adapter_dir)
    if _is_current(output_dir, fingerprint):
        logger.info("Reusing the merged weights in %s", output_dir)
        return output_dir

    from vstar.train.sft import merge_adapter

    logger.info("Merging %s into %s for vLLM (on the CPU) -> %s", adapter, model, output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        merge_adapter(model, adapter_dir, staging, processor=processor or model)
        marker = {"base_model": model, "adapter": adapter, "fingerprint": fingerprint}
        (staging / MERGE_MARKER).write_text(json.dumps(marker, indent=2))
        _replace_dir(staging, output_dir, fingerprint)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _replace_dir(staging: Path, target: Path, fingerprint: str) -> None:
    """Move the finished `staging` directory to `target`, setting aside a stale `target` first."""
    stale = None
    if target.exists():
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.rename(target, stale)
    try:
        os.rename(staging, target)
    except OSError:
        # Another process finished the same merge first; its copy is as good as this one.
        if not _is_current(target, fingerprint):
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


# -- the backend ----------------------------------------------------------------------------------------------


@dataclass
class VLLMBatch:
    """A prepared batch: the requests and their vLLM prompts, in the same order."""

    requests: list[GenerationRequest]
    prompts: list[dict[str, Any]]


def request_sampling_kwargs(requests: Sequence[GenerationRequest], settings: GenerationSettings) -> list[dict]:
    """`sampling_kwargs` per request: the same, but for requests that set their own `max_new_tokens`.

    Args:
        requests: the batch, in order.
        settings: the generation settings.
    """
    shared = sampling_kwargs(settings)
    return [{**shared, "max_tokens": max_new_tokens(r, settings)} for r in requests]


@BACKENDS.register("vllm")
class VLLMBackend(GenerationBackend):
    """Generation with a vLLM engine (`LLM.generate`).

    Args:
        model: base model id or directory.
        adapter: a LoRA adapter directory (or Hub id), applied as `settings.lora_mode` says, or `None`.
        settings: the generation settings, including the `vllm:` ones (`tensor_parallel_size`,
            `gpu_memory_utilization`, `max_model_len`, `lora_mode`, `max_lora_rank`).
        processor: processor id or directory for the chat template and the engine's tokenizer (default: the
            model's). vLLM always reads the video processor's settings from the model directory.

    Raises:
        ImportError: when vLLM is not installed.
        ValueError: for an unknown `lora_mode`, or an adapter whose rank exceeds `max_lora_rank`.
    """

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        settings: GenerationSettings | None = None,
        processor: str | None = None,
    ):
        self.settings = settings or GenerationSettings()
        check_lora_mode(self.settings.lora_mode)
        if is_distributed():
            # Every rank would start its own engine on the same first GPUs.
            raise ValueError(
                "The vllm backend runs as one process that drives its GPUs itself: launch it without torchrun / "
                "accelerate launch and set --tensor_parallel_size to the GPUs one model copy spans. For one process "
                "per GPU, use the transformers backend."
            )
        vllm = import_vllm()
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(processor or model)
        self.lora_request = None
        engine_model, tokenizer = model, processor
        if adapter and self.settings.lora_mode == "merge":
            engine_model = str(merge_adapter_for_vllm(model, adapter, processor))
            tokenizer = None
        elif adapter:
            adapter_dir = local_adapter_dir(adapter)
            rank = adapter_rank(read_adapter_config(adapter_dir))
            if rank > self.settings.max_lora_rank:
                raise ValueError(
                    f"The adapter {adapter} has LoRA rank {rank}, above max_lora_rank {self.settings.max_lora_rank}; "
                    "raise --max_lora_rank (to a rank vLLM offers, e.g. 128) or use --lora_mode merge."
                )
            self.lora_request = vllm.LoRARequest(lora_name=adapter_dir.name, lora_int_id=1, lora_path=str(adapter_dir))
        kwargs = engine_kwargs(engine_model, self.settings, tokenizer, enable_lora=self.lora_request is not None)
        logger.info("Starting vLLM: %s", kwargs)
        self.llm = vllm.LLM(**kwargs)
        self.sampling_params = vllm.SamplingParams(**sampling_kwargs(self.settings))
        self.generator = model + (f"+{adapter}" if adapter else "")
        self.model_name, self.adapter_name = model, adapter
        workers = self.settings.decode_workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vstar-decode") if workers else None

    def close(self) -> None:
        """Shut the engine down (its worker processes and KV cache) before the GPUs are trained on."""
        llm, self.llm = getattr(self, "llm", None), None
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None) or getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm, engine, core
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with contextlib.suppress(ImportError, AttributeError, AssertionError, RuntimeError):
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        super().close()

    def use_settings(self, settings: GenerationSettings) -> None:
        super().use_settings(settings)
        self.sampling_params = import_vllm().SamplingParams(**sampling_kwargs(self.settings))

    def prepare(self, requests: Sequence[GenerationRequest]) -> VLLMBatch:
        requests = list(requests)
        return VLLMBatch(requests, build_prompts(self.processor, requests, self.settings, self._pool))

    def generate_prepared(self, prepared: VLLMBatch) -> list[str]:
        if not prepared.prompts:
            return []
        params: Any = self.sampling_params
        if any(r.max_new_tokens is not None for r in prepared.requests):
            # `LLM.generate` takes one SamplingParams per prompt as well as one for all.
            vllm = import_vllm()
            params = [vllm.SamplingParams(**kw) for kw in request_sampling_kwargs(prepared.requests, self.settings)]
        # `run_generation` shows its own progress bar.
        outputs = self.llm.generate(prepared.prompts, params, lora_request=self.lora_request, use_tqdm=False)
        return answers_from_outputs(outputs, prepared.requests)
