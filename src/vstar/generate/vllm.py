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

Two ways to use a node:

- one process (no launcher): one engine drives `tensor_parallel_size` GPUs with its own workers and batches
  continuously; larger `batch_size`s give it more to schedule;
- under `torchrun` / `accelerate launch` (as TRL's colocated mode does): every group of `tensor_parallel_size`
  consecutive ranks runs one engine on its ranks' GPUs in the launch's process group (vLLM's
  `distributed_executor_backend="external_launcher"`), so 8 GPUs with `tensor_parallel_size: 1` are 8 engines
  answering their own chunks (`engine_plan`). The ranks of one group answer the same chunks in lockstep and
  only the group's first rank writes them. `vstar cycle` then trains in the same launch, after `close()` has shut
  the engines down.

```bash
accelerate launch --num_processes 8 -m vstar.cli cycle --config recipe.yaml  # generation_backend: vllm
```
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

from vstar.distributed import init_distributed
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    distinct_prompts,
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


@dataclass(frozen=True)
class EnginePlan:
    """Which engine a process belongs to and which share of the work that engine answers.

    Attributes:
        launched: the process is one of several of a launch (each engine group runs vLLM with the
            `external_launcher` executor); `False` for one process whose engine starts its own workers.
        devices: the local GPU indices the engine spans (this process's own GPU is `devices[rank_in_group]`
            under a launch; one process drives all of them).
        group: the global ranks of the processes that run this engine together (tensor parallel).
        rank_in_group: this process's place in `group`.
        data_parallel_rank, data_parallel_size: this engine's share of the chunks, and the number of engines.
    """

    launched: bool
    devices: tuple[int, ...]
    group: tuple[int, ...]
    rank_in_group: int
    data_parallel_rank: int
    data_parallel_size: int

    @property
    def leader(self) -> bool:
        """The group's first process: the one that writes the engine's answers."""
        return self.rank_in_group == 0

    @property
    def device(self) -> int:
        """The local GPU this process drives (the first of the engine's for one process)."""
        return self.devices[self.rank_in_group]


def engine_plan(
    world_size: int,
    rank: int,
    local_rank: int,
    tensor_parallel_size: int,
    local_world_size: int | None = None,
    num_gpus: int | None = None,
) -> EnginePlan:
    """The engine a process runs under a launch of `world_size` processes (or alone, `world_size` 1).

    Consecutive ranks form an engine (as vLLM's and TRL's tensor parallel groups do: ranks 0-1, 2-3, ... for
    `tensor_parallel_size` 2), each process on its own GPU `local_rank`, so an engine never spans two nodes as
    long as a node's process count is a multiple of `tensor_parallel_size`.

    Args:
        world_size: processes of the launch (`WORLD_SIZE`), 1 without a launcher.
        rank: this process's global rank (`RANK`).
        local_rank: its rank on its node (`LOCAL_RANK`), which is also its GPU.
        tensor_parallel_size: GPUs one engine spans.
        local_world_size: processes per node (`LOCAL_WORLD_SIZE`; default: all of them on one node).
        num_gpus: GPUs visible on this node, when known (checked against what the plan needs).

    Raises:
        ValueError: naming the setting to change, for sizes that cannot be laid out.
    """
    tp = tensor_parallel_size
    if tp < 1 or world_size < 1:
        raise ValueError(f"tensor_parallel_size and the world size must be at least 1, not {tp} and {world_size}.")
    if not 0 <= rank < world_size:
        raise ValueError(f"Rank {rank} is outside a launch of {world_size} processes.")
    if world_size == 1:
        if num_gpus is not None and tp > num_gpus:
            raise ValueError(
                f"tensor_parallel_size {tp} needs {tp} GPUs, but this machine has {num_gpus}: lower "
                "--tensor_parallel_size (vllm_tensor_parallel_size in a recipe)."
            )
        return EnginePlan(False, tuple(range(tp)), (0,), 0, 0, 1)
    local_world_size = world_size if local_world_size is None else local_world_size
    if local_world_size < 1 or world_size % local_world_size:
        raise ValueError(f"{local_world_size} processes per node do not divide a launch of {world_size}.")
    if not 0 <= local_rank < local_world_size or rank % local_world_size != local_rank:
        raise ValueError(
            f"Rank {rank} has local rank {local_rank} with {local_world_size} processes per node; the vllm backend "
            "needs the launcher's usual layout (consecutive ranks on one node)."
        )
    if tp > local_world_size:
        raise ValueError(
            f"tensor_parallel_size {tp} is larger than the {local_world_size} processes (GPUs) of a node: an engine "
            f"spans the GPUs of one node; lower vllm_tensor_parallel_size or launch {tp} processes per node."
        )
    if local_world_size % tp:
        raise ValueError(
            f"tensor_parallel_size {tp} does not divide the {local_world_size} processes of a node (world size "
            f"{world_size}): launch a multiple of {tp} processes per node, or pick a tensor_parallel_size that "
            "divides it."
        )
    if num_gpus is not None and local_world_size > num_gpus:
        raise ValueError(
            f"{local_world_size} processes per node but {num_gpus} GPUs: launch one process per GPU "
            f"(--nproc_per_node {num_gpus})."
        )
    first = rank - rank % tp
    first_local = local_rank - local_rank % tp
    return EnginePlan(
        launched=True,
        devices=tuple(range(first_local, first_local + tp)),
        group=tuple(range(first, first + tp)),
        rank_in_group=rank - first,
        data_parallel_rank=rank // tp,
        data_parallel_size=world_size // tp,
    )


def plan_from_env(tensor_parallel_size: int) -> EnginePlan:
    """`engine_plan` for this process, from the launcher's environment and the visible GPUs.

    Args:
        tensor_parallel_size: GPUs one engine spans.
    """
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return engine_plan(
        world_size,
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_RANK", 0)),
        tensor_parallel_size,
        int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
        torch.cuda.device_count() if torch.cuda.is_available() else None,
    )


def engine_kwargs(
    model: str,
    settings: GenerationSettings,
    tokenizer: str | None = None,
    enable_lora: bool = False,
    plan: EnginePlan | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for a model directory (or Hub id) and the settings.

    Under a launch (`plan.launched`) the engine joins the launch's processes (`external_launcher`: no workers of
    its own, each process runs its share of the `tensor_parallel_size` GPUs) and takes the seed `seed +
    data_parallel_rank`: the same for the processes of one engine, as vLLM needs, and another for each engine.
    Answers do not depend on it: every request carries its own seed (`sampling_kwargs`).

    Args:
        model: the weights the engine loads (the base model, or a merged copy).
        settings: `tensor_parallel_size`, `gpu_memory_utilization`, `max_model_len`, `max_lora_rank`, `seed`.
        tokenizer: a separate tokenizer directory, else the model's.
        enable_lora: serve LoRA adapters (`lora_mode: request`).
        plan: this process's engine (`engine_plan`), or `None` for one process.
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "seed": settings.seed,
        # Memory for multimodal inputs is reserved per item; prompts here hold exactly one clip.
        "limit_mm_per_prompt": {"video": 1},
    }
    if plan is not None and plan.launched:
        if len(plan.group) != settings.tensor_parallel_size:
            raise ValueError(
                f"The plan's engine spans {len(plan.group)} processes, the settings {settings.tensor_parallel_size}."
            )
        kwargs.update(distributed_executor_backend="external_launcher", seed=settings.seed + plan.data_parallel_rank)
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

    # Samples of one prompt (`GenerationRequest.sample`) share one decoded clip.
    distinct, owners = distinct_prompts(requests)
    with_video = [i for i, r in enumerate(distinct) if not r.text_only]
    to_decode = [distinct[i] for i in with_video]
    decoded = list(pool.map(clip, to_decode)) if pool else [clip(r) for r in to_decode]
    videos = {i: video_input(c) for i, c in zip(with_video, decoded)}
    prompts = []
    for request, owner in zip(requests, owners):
        prompt: dict[str, Any] = {"prompt": request_prompt(processor, request)}
        if not request.text_only:
            prompt["multi_modal_data"] = {"video": videos[owner]}
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


def prepare_launched_engine(plan: EnginePlan) -> None:
    """What an `external_launcher` engine expects of its process, set before it starts (as TRL's colocated mode).

    The launch's process group is joined first (accelerate's, so training later uses the same one and vLLM, which
    only creates a group when none exists, builds its groups inside it); the process is pinned to its own GPU; and
    the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: with the external launcher no engine
    process of its own may start).

    Args:
        plan: this process's engine (`plan.launched`).
    """
    import torch

    init_distributed()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if torch.cuda.is_available():
        torch.cuda.set_device(plan.device)


def teardown_vllm_groups(parallel_state: Any, launched: bool) -> None:
    """Destroy vLLM's process groups; under a launch, keep the launch's own.

    vLLM's `destroy_distributed_environment` ends with `torch.distributed.destroy_process_group()`, the default
    group: under a launch that is the group training is about to use. Its own groups (tensor / pipeline / data
    parallel, and the world `GroupCoordinator`, whose device and CPU groups are `new_group`s over the launch's
    ranks) are destroyed one by one instead, and its world cleared so another engine can start later.

    Args:
        parallel_state: `vllm.distributed.parallel_state`.
        launched: the process is part of a launch.
    """
    with contextlib.suppress(AttributeError, AssertionError, RuntimeError, ValueError):
        parallel_state.destroy_model_parallel()
    if not launched:
        with contextlib.suppress(AttributeError, AssertionError, RuntimeError, ValueError):
            parallel_state.destroy_distributed_environment()
        return
    world = getattr(parallel_state, "_WORLD", None)
    if world is not None:
        with contextlib.suppress(AttributeError, AssertionError, RuntimeError, ValueError):
            world.destroy()
        parallel_state._WORLD = None


@dataclass
class VLLMBatch:
    """A prepared batch: the requests and their vLLM prompts, in the same order."""

    requests: list[GenerationRequest]
    prompts: list[dict[str, Any]]


def request_sampling_kwargs(requests: Sequence[GenerationRequest], settings: GenerationSettings) -> list[dict]:
    """`sampling_kwargs` per request: the same, but for requests that set their own `max_new_tokens`, and, when
    sampling, a seed per sample (`settings.seed + request.sample`).

    Args:
        requests: the batch, in order.
        settings: the generation settings.
    """
    shared = sampling_kwargs(settings)
    kwargs = [{**shared, "max_tokens": max_new_tokens(r, settings)} for r in requests]
    if "seed" in shared:
        # Samples of one prompt must not share a seed: vLLM would give the same answer for each.
        for request, kw in zip(requests, kwargs):
            kw["seed"] = settings.seed + request.sample
    return kwargs


@BACKENDS.register("vllm")
class VLLMBackend(GenerationBackend):
    """Generation with a vLLM engine (`LLM.generate`): one process's engine on `tensor_parallel_size` GPUs, or,
    under `torchrun` / `accelerate launch`, the engine of this process's group of ranks (`engine_plan`), which
    answers the group's share of the chunks (`shard`).

    Args:
        model: base model id or directory.
        adapter: a LoRA adapter directory (or Hub id), applied as `settings.lora_mode` says, or `None`.
        settings: the generation settings, including the `vllm:` ones (`tensor_parallel_size`,
            `gpu_memory_utilization`, `max_model_len`, `lora_mode`, `max_lora_rank`).
        processor: processor id or directory for the chat template and the engine's tokenizer (default: the
            model's). vLLM always reads the video processor's settings from the model directory.

    Raises:
        ImportError: when vLLM is not installed.
        ValueError: for an unknown `lora_mode`, an adapter whose rank exceeds `max_lora_rank`, or a
            `tensor_parallel_size` the launch's processes cannot be grouped by (see `engine_plan`).
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
        self.plan = plan_from_env(self.settings.tensor_parallel_size)
        vllm = import_vllm()
        if self.plan.launched:
            prepare_launched_engine(self.plan)
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
        kwargs = engine_kwargs(
            engine_model, self.settings, tokenizer, enable_lora=self.lora_request is not None, plan=self.plan
        )
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
        with contextlib.suppress(ImportError):
            from vllm.distributed import parallel_state

            teardown_vllm_groups(parallel_state, launched=self.plan.launched)
        super().close()

    def shard(self, rank: int, world_size: int) -> tuple[int, int, bool]:
        """Under a launch, the engine's share (every process of an engine answers the same chunks, its first
        writes them); alone, the caller's."""
        if not self.plan.launched:
            return super().shard(rank, world_size)
        return self.plan.data_parallel_rank, self.plan.data_parallel_size, self.plan.leader

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
        sampled = self.settings.temperature > 0 and any(r.sample for r in prepared.requests)
        if sampled or any(r.max_new_tokens is not None for r in prepared.requests):
            # `LLM.generate` takes one SamplingParams per prompt as well as one for all.
            vllm = import_vllm()
            params = [vllm.SamplingParams(**kw) for kw in request_sampling_kwargs(prepared.requests, self.settings)]
        # `run_generation` shows its own progress bar.
        outputs = self.llm.generate(prepared.prompts, params, lora_request=self.lora_request, use_tqdm=False)
        return answers_from_outputs(outputs, prepared.requests)
