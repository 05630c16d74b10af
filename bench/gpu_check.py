"""A short check of a GPU machine with nothing downloaded: peak memory and throughput of vstar's batched generation
and of a LoRA training step, on a Qwen2.5-VL model of the real 7B size with random weights (bf16).

The model, tokenizer and processor are built from configs (`vstar.testing.tiny_models`), the clip is a real H.264
file decoded by `vstar.video`, the inputs go through the same helpers as the transformers backend and the SFT
collator (`chat_prompt`, `video_model_inputs`, `VideoSFTCollator`), LoRA through `vstar.train.sft.lora_config`.
Random weights answer nonsense, so generation runs a fixed number of new tokens (no early stop): the throughput is
that of real-size matrices, not of real answers. Under 5 minutes on one H100/H200; prints one JSON object.

```bash
python bench/gpu_check.py                  # 7B on the GPU (bf16)
python bench/gpu_check.py --preset tiny    # the tiny test model, on the CPU (a check of the script itself)
```
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("gpu_check")

# Qwen2.5-VL-7B-Instruct's published config (text and vision towers), with random weights.
QWEN2_5_VL_7B_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
QWEN2_5_VL_7B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
PRESETS = {
    # frames per clip, frame side in pixels, batch of generation, new tokens, training batch
    "7b": {"num_frames": 16, "side": 448, "batch_size": 8, "new_tokens": 128, "train_batch": 2},
    "tiny": {"num_frames": 8, "side": 56, "batch_size": 8, "new_tokens": 16, "train_batch": 4},
}


def build_model(preset: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    from vstar.tasks.shapes import tokenizer_corpus
    from vstar.testing.tiny_models import _processor, _vision_processors, build_config, build_tokenizer

    tokenizer = build_tokenizer(tokenizer_corpus(), architecture="qwen2_5_vl")
    config = build_config("qwen2_5_vl", tokenizer)
    side = PRESETS[preset]["side"]
    if preset == "7b":
        for name, value in QWEN2_5_VL_7B_TEXT.items():
            setattr(config.text_config, name, value)
        for name, value in QWEN2_5_VL_7B_VISION.items():
            setattr(config.vision_config, name, value)
    image_processor, video_processor = _vision_processors("qwen2_5_vl", fps=8.0)
    video_processor.size = {"shortest_edge": side * side, "longest_edge": side * side}
    processor = _processor("qwen2_5_vl", tokenizer, image_processor, video_processor)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model.eval(), processor


def synthetic_clip(path: Path, side: int, num_frames: int):
    """A real H.264 file of moving noise, decoded back by `vstar.video` (what a backend sees)."""
    from vstar.video import sample_frames, write_video

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    frames = [np.roll(base, 4 * i, axis=1) for i in range(max(2 * num_frames, 16))]
    write_video(path, frames, fps=8.0)
    return sample_frames({"path": str(path), "bytes": None}, num_frames=num_frames)


def peak_memory(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_generation(model, processor, clip, settings: dict, device: torch.device) -> dict:
    from vstar.generate.base import chat_prompt
    from vstar.train.collator import video_model_inputs

    processor.tokenizer.padding_side = "left"
    prompts = [chat_prompt(processor, f"Question {i}: what happens in the video, step by step?") for i in range(8)]
    batch = settings["batch_size"]
    texts = [prompts[i % len(prompts)] for i in range(batch)]
    inputs = video_model_inputs(processor, texts, [clip] * batch).to(device)
    new_tokens = settings["new_tokens"]
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    with torch.inference_mode():
        model.generate(**inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        reset_peak(device)
        start = time.perf_counter()
        output = model.generate(**inputs, **kwargs)
        sync(device)
        seconds = time.perf_counter() - start
    generated = (output.shape[1] - inputs["input_ids"].shape[1]) * batch
    return {
        "batch_size": batch,
        "prompt_tokens_per_clip": int(inputs["input_ids"].shape[1]),
        "video_tokens_per_clip": int(inputs["video_grid_thw"][0].prod().item() // 4),
        "new_tokens_per_answer": new_tokens,
        "seconds": round(seconds, 3),
        "output_tokens_per_s": round(generated / seconds, 1),
        "clips_per_s": round(batch / seconds, 3),
        "peak_memory_gib": peak_memory(device),
    }


def check_training_step(model, processor, clip_path: Path, settings: dict, device: torch.device, dtype) -> dict:
    from peft import get_peft_model

    from vstar.train.collator import VideoSFTCollator
    from vstar.train.sft import VStarSFTConfig, lora_config

    config = VStarSFTConfig(output_dir=tempfile.mkdtemp(), lora_r=16, lora_alpha=32, lora_dropout=0.0)
    peft_model = get_peft_model(model, lora_config(config))
    peft_model.train()
    # Activation checkpointing, as the 7B recipes train.
    peft_model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    peft_model.enable_input_require_grads()
    processor.tokenizer.padding_side = "right"
    collator = VideoSFTCollator(processor, num_frames=settings["num_frames"])
    answer = "The noise moves to the right in every frame. Answer: right " * 4
    examples = [
        {
            "id": f"clip-{i}",
            "video": {"path": str(clip_path), "bytes": None},
            "start": None,
            "end": None,
            "messages": [
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where does it move?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ],
        }
        for i in range(settings["train_batch"])
    ]
    batch = {k: v.to(device) for k, v in collator(examples).items()}
    if "pixel_values_videos" in batch:
        batch["pixel_values_videos"] = batch["pixel_values_videos"].to(dtype)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    before = [p.detach().clone() for p in trainable[:4]]

    def step() -> float:
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up (kernels, optimizer state)
    reset_peak(device)
    start = time.perf_counter()
    loss = step()
    sync(device)
    seconds = time.perf_counter() - start
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, trainable[:4]))
    return {
        "batch_size": settings["train_batch"],
        "tokens_per_example": int(batch["input_ids"].shape[1]),
        "trainable_parameters_m": round(sum(p.numel() for p in trainable) / 1e6, 2),
        "seconds_per_step": round(seconds, 3),
        "tokens_per_s": round(batch["input_ids"].numel() / seconds, 1),
        "loss": round(loss, 4),
        "adapter_moved": moved,
        "peak_memory_gib": peak_memory(device),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: 7b on a GPU, else tiny")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cuda = torch.cuda.is_available()
    preset = args.preset or ("7b" if cuda else "tiny")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    settings = PRESETS[preset]
    started = time.perf_counter()
    torch.manual_seed(0)
    model, processor = build_model(preset, device, dtype)
    build_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = Path(tmp) / "clip.mp4"
        clip = synthetic_clip(clip_path, settings["side"], settings["num_frames"])
        result = {
            "preset": preset,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "dtype": str(dtype).removeprefix("torch."),
            "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
            "build_seconds": round(build_seconds, 1),
            "frames_per_clip": settings["num_frames"],
            "frame_side": settings["side"],
            "generation": check_generation(model, processor, clip, settings, device),
            "lora_step": check_training_step(model, processor, clip_path, settings, device, dtype),
        }
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
