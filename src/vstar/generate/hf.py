"""The transformers backend: batched `generate` with left padding, frames decoded by `vstar.video`.

Works with any `AutoModelForImageTextToText` video model (Qwen2/2.5/3-VL, LLaVA-OneVision, SmolVLM2, ...) and an
optional PEFT adapter, merged into the weights for speed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from vstar.distributed import local_device
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    distinct_prompts,
    max_new_tokens,
    request_prompt,
    sample_clip,
)
from vstar.train.collator import video_model_inputs

logger = logging.getLogger(__name__)


@contextmanager
def whole_weights_per_process():
    """Load whole weights in every process even when the training config enabled DeepSpeed ZeRO-3.

    Parsing a ZeRO-3 training config makes `from_pretrained` partition the weights across processes; generation
    would then gather them layer by layer in lockstep, and ranks that answer different numbers of batches would
    wait for each other forever. A 7-8B model fits whole on one GPU for inference.
    """
    from transformers.integrations import deepspeed

    reference = getattr(deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = reference() if reference is not None else None
    if config is None or not config.is_zero3():
        yield
        return
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed.set_hf_deepspeed_config(config)


def load_generation_model(model: str, adapter: str | None = None, dtype: torch.dtype | None = None):
    """The model in eval mode, with `adapter` merged in when given."""
    from transformers import AutoModelForImageTextToText

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    with whole_weights_per_process():
        loaded = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        if adapter:
            from peft import PeftModel

            loaded = PeftModel.from_pretrained(loaded, adapter).merge_and_unload()
    if torch.cuda.is_available():
        loaded = loaded.to(local_device())
    return loaded.eval()


# Processor outputs with one entry per video (not per text row), and how a video's entries are found.
_PER_VIDEO = ("video_grid_thw", "second_per_grid_ts")


def repeat_rows(inputs, owners: Sequence[int], has_video: Sequence[bool]):
    """Model inputs for `owners` (row i is distinct row `owners[i]`), built from the inputs of the distinct rows
    without running the processor again: text rows are repeated, and so are their videos' patches.

    Qwen-style inputs concatenate every video's patches in `pixel_values_videos` (`video_grid_thw` gives each
    video's count); others hold one entry per video along the first axis.
    """
    rows = torch.as_tensor(list(owners))
    video_of = {}
    for row, flag in enumerate(has_video):
        if flag:
            video_of[row] = len(video_of)
    order = [video_of[o] for o in owners if o in video_of]
    out = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos" and "video_grid_thw" in inputs:
            sizes = inputs["video_grid_thw"].prod(dim=-1).tolist()
            parts = torch.split(value, sizes)
            out[key] = torch.cat([parts[v] for v in order]) if order else value[:0]
        elif key == "pixel_values_videos" or key in _PER_VIDEO:
            out[key] = value[torch.as_tensor(order)] if torch.is_tensor(value) else [value[v] for v in order]
        elif torch.is_tensor(value) and value.shape[:1] == (len(has_video),):
            out[key] = value[rows]
        else:
            raise ValueError(f"Cannot repeat the processor output {key!r} per sample.")
    return type(inputs)(out)


@BACKENDS.register("transformers")
class TransformersBackend(GenerationBackend):
    """Batched generation with `model.generate`.

    Args:
        model: base model id or directory.
        adapter: a LoRA adapter directory (or Hub id) to merge, or `None`.
        settings: the generation settings.
        processor: processor id or directory (defaults to the adapter's, then the model's).
        decode_workers: threads that decode a batch's clips (default: `settings.decode_workers`).
    """

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        settings: GenerationSettings | None = None,
        processor: str | None = None,
        decode_workers: int | None = None,
    ):
        from transformers import AutoProcessor

        self.settings = settings or GenerationSettings()
        self.model = load_generation_model(model, adapter)
        self.processor = AutoProcessor.from_pretrained(processor or model)
        self.processor.tokenizer.padding_side = "left"
        self.generator = model + (f"+{adapter}" if adapter else "")
        self.model_name, self.adapter_name = model, adapter
        decode_workers = self.settings.decode_workers if decode_workers is None else decode_workers
        self._pool = ThreadPoolExecutor(max_workers=decode_workers) if decode_workers else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.model = None
        super().close()

    def prepare(self, requests: Sequence[GenerationRequest]):
        def clip(request: GenerationRequest):
            return sample_clip(request, self.settings)

        requests = list(requests)
        # Samples of one prompt (`GenerationRequest.sample`) share one decoded clip and one processor call.
        distinct, owners = distinct_prompts(requests)
        with_video = [r for r in distinct if not r.text_only]
        clips = list(self._pool.map(clip, with_video)) if self._pool else [clip(r) for r in with_video]
        texts = [request_prompt(self.processor, r) for r in distinct]
        if clips:
            # The processor fills the video placeholders in text order; text-only turns have none.
            inputs = video_model_inputs(self.processor, texts, clips)
        else:
            inputs = self.processor(text=texts, padding=True, return_tensors="pt")
        # Rows stay one per distinct prompt: `generate_prepared` answers each prompt's samples from one prefill.
        inputs.vstar_owners = owners if len(distinct) < len(requests) else None
        inputs.vstar_has_video = [not r.text_only for r in distinct]
        inputs.vstar_max_new_tokens = [max_new_tokens(r, self.settings) for r in requests]
        return inputs

    @torch.inference_mode()
    def generate_prepared(self, prepared) -> list[str]:
        limits = getattr(prepared, "vstar_max_new_tokens", None) or [self.settings.max_new_tokens]
        owners = getattr(prepared, "vstar_owners", None)
        has_video = getattr(prepared, "vstar_has_video", None)
        inputs = prepared.to(self.model.device)
        sampling = self.settings.temperature > 0
        if sampling:
            torch.manual_seed(self.settings.seed)
        options = dict(
            max_new_tokens=max(limits),
            do_sample=sampling,
            temperature=self.settings.temperature if sampling else None,
            top_p=self.settings.top_p if sampling else None,
            top_k=None,
        )
        if owners is not None and _cache_argument(self.model) is not None:
            output, prompt_length = shared_prefill_generate(self.model, inputs, owners, **options)
        else:
            if owners is not None:
                inputs = repeat_rows(inputs, owners, has_video)
            output, prompt_length = self.model.generate(**inputs, **options), inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_length:]
        if len(set(limits)) > 1:
            # A row's first tokens do not depend on how long the batch goes on: cutting each at its own limit
            # gives what generating it alone would.
            new_tokens = [row[:limit] for row, limit in zip(new_tokens, limits)]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _cache_argument(model) -> str | None:
    """The name under which the model's forward takes a KV cache (`cache` from transformers 5.24, before that
    `past_key_values`), or `None`."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _text_keys(inputs) -> list[str]:
    """The inputs with one entry per token of the prompt (ids, attention mask, token types)."""
    shape = tuple(inputs["input_ids"].shape)
    return [key for key, value in inputs.items() if torch.is_tensor(value) and tuple(value.shape[:2]) == shape]


def shared_prefill_generate(model, inputs, owners: Sequence[int], **options) -> tuple[torch.Tensor, int]:
    """`model.generate` for the rows `owners` (row i is a sample of prompt `owners[i]` of `inputs`), running the
    vision encoder and the prompt's prefill once per distinct prompt instead of once per sample.

    A video prompt is mostly video tokens, so with several samples per clip the prefill is most of the work: the
    distinct prompts are run once up to their last token, the KV cache is copied per sample, and `generate` goes on
    from there for every sample; its first step runs the last prompt token. Batch state a model keeps from the
    prefill (the 3D rope offsets of the Qwen-VL family) is copied per sample too. Greedy answers are those of
    generating every sample from scratch (tested for Qwen2-VL, Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision).

    Returns the generated ids (prompt included) and the prompt length.
    """
    rows = torch.as_tensor(list(owners), device=inputs["input_ids"].device)
    text = _text_keys(inputs)
    prefix = {key: value[:, :-1] if key in text else value for key, value in inputs.items()}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        prefix["logits_to_keep"] = 1  # the prefill's logits are not used: do not hold the whole prompt's
    output = model(**prefix, use_cache=True)
    cache = getattr(output, "cache", None) or output.past_key_values
    cache.batch_select_indices(rows)
    for module in (model, getattr(model, "model", None)):
        deltas = getattr(module, "rope_deltas", None)
        if torch.is_tensor(deltas) and deltas.shape[0] == inputs["input_ids"].shape[0]:
            module.rope_deltas = deltas[rows]
    expanded = {key: inputs[key][rows] for key in text}
    generated = model.generate(**expanded, **{_cache_argument(model): cache}, **options)
    return generated, expanded["input_ids"].shape[1]
