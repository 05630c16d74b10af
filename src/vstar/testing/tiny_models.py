"""Tiny, randomly initialised video language models built entirely offline.

Real transformers classes (Qwen2.5-VL, Qwen2-VL, Qwen3-VL, LLaVA-OneVision) with small configs, a byte-level BPE
tokenizer trained on the texts the model will see, and a processor whose video processor resizes clips to a handful
of patches. Each family keeps its own special tokens and chat-template layout, so code that works on the tiny
model meets the same prompt format as on the released checkpoint.
Everything is written with `save_pretrained`, so `AutoModelForImageTextToText.from_pretrained(dir)` and
`AutoProcessor.from_pretrained(dir)` load it like any Hub checkpoint.

```bash
python -m vstar.testing.tiny_models /tmp/tiny-qwen2.5-vl --architecture qwen2_5_vl
```
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ARCHITECTURES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llava_onevision")

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_ONEVISION_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# The Qwen chat template, reduced to what the loop sends (text, image and video parts). The `generation`
# markers let `apply_chat_template(..., return_assistant_tokens_mask=True)` find the assistant tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# The layout of the llava-hf LLaVA-OneVision checkpoints: the role and a space, every image then every video
# placeholder, each text part after a newline, `<|im_end|>` with no newline. Its generation prompt ends in
# `assistant\n` while a rendered assistant turn starts `assistant \n`, so the prompt is not a prefix of the
# conversation; the tiny model keeps that quirk so training code is tested against it.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{%- if message['content'] is string -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{ '\\n' + message['content'] }}{% endgeneration %}"
    "{%- else -%}{{ '\\n' + message['content'] }}{%- endif -%}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'video' -%}{{ '<video>' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{ '\\n' + part['text'] }}{% endgeneration %}"
    "{%- else -%}{{ '\\n' + part['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# 56 x 56 pixels = 4 x 4 patches of 14 px = 2 x 2 merged tokens per pair of frames.
FRAME_PIXELS = 56 * 56
# Qwen3-VL patches are 16 px and its video size bounds count the pixels of all frames together: 64 x 64 frames
# (4 x 4 patches, 2 x 2 merged tokens per pair of frames) up to 8 frames, smaller frames for longer clips.
QWEN3_FRAME_SIDE = 64
QWEN3_MAX_VIDEO_PIXELS = 8 * QWEN3_FRAME_SIDE * QWEN3_FRAME_SIDE
# LLaVA-OneVision resizes every frame to the vision tower's square input: 64 px / 16 px patches = 4 x 4 patches,
# pooled to 2 x 2 tokens per frame, plus one newline token per video.
LLAVA_IMAGE_SIZE = 64
LLAVA_PATCH_SIZE = 16


def special_tokens(architecture: str = "qwen2_5_vl") -> list[str]:
    """The special tokens of an architecture's tokenizer (the first is the padding token)."""
    return LLAVA_ONEVISION_SPECIAL_TOKENS if architecture == "llava_onevision" else SPECIAL_TOKENS


def chat_template(architecture: str = "qwen2_5_vl") -> str:
    """The chat template of an architecture family."""
    return LLAVA_ONEVISION_CHAT_TEMPLATE if architecture == "llava_onevision" else CHAT_TEMPLATE


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, architecture: str = "qwen2_5_vl"):
    """Train a byte-level BPE on `corpus` and wrap it as a `Qwen2Tokenizer` with the architecture's special tokens.

    Byte-level means any text can still be encoded; the merges only make the corpus's own texts short.

    Args:
        corpus: texts the merges are trained on.
        vocab_size: vocabulary size including the 256 byte symbols and the special tokens.
        architecture: one of `ARCHITECTURES`; picks the special tokens and the chat template.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    _check_architecture(architecture)
    specials = special_tokens(architecture)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=specials,
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    model_state = __import__("json").loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    if architecture == "llava_onevision":
        media = {"image_token": "<image>", "video_token": "<video>"}
    else:
        media = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tokenizer = Qwen2Tokenizer(
        vocab=model_state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=media,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.chat_template = chat_template(architecture)
    tokenizer.padding_side = "left"
    return tokenizer


def _vision_processors(architecture: str, fps: float):
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLVideoProcessor,
    )

    if architecture == "llava_onevision":
        size = {"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE}
        side = LLAVA_IMAGE_SIZE
        # Any-resolution tiling of single images: the base tile plus up to 2 x 2 tiles, as on the real model.
        pinpoints = [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
        image_processor = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints)
        return image_processor, LlavaOnevisionVideoProcessor(size=size, do_sample_frames=False)
    if architecture == "qwen3_vl":
        side = QWEN3_FRAME_SIDE
        image_size = {"shortest_edge": side * side, "longest_edge": side * side}
        image_processor = Qwen2VLImageProcessor(size=image_size, patch_size=16, temporal_patch_size=2, merge_size=2)
        video_processor = Qwen3VLVideoProcessor(
            # At least one merged token per pair of frames, at most 64 x 64 per frame for 8 frames.
            size={"shortest_edge": 2 * 32 * 32, "longest_edge": QWEN3_MAX_VIDEO_PIXELS},
            patch_size=16,
            temporal_patch_size=2,
            merge_size=2,
            # Frame sampling (`do_sample_frames`, `fps`) stays at the class defaults, as on the released
            # checkpoints: the processor would resample given frames unless the caller says they are sampled.
            cap_pixels_per_frame=False,
        )
        return image_processor, video_processor
    size = {"shortest_edge": FRAME_PIXELS, "longest_edge": FRAME_PIXELS}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, temporal_patch_size=2, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(
        size=size,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        fps=fps,
        do_sample_frames=False,
        cap_pixels_per_frame=False,
    )
    return image_processor, video_processor


def _text_config(vocab_size: int, special: dict[str, int]) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # head_dim 32: the three mrope sections must add up to head_dim / 2.
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5]},
        "bos_token_id": special["<|im_start|>"],
        "eos_token_id": special["<|im_end|>"],
        "pad_token_id": special["<|endoftext|>"],
        "tie_word_embeddings": False,
    }


def build_config(architecture: str, tokenizer):
    """A small config of a real video VLM class whose special token ids point into `tokenizer`.

    Args:
        architecture: one of `ARCHITECTURES`.
        tokenizer: the tokenizer from `build_tokenizer` for the same architecture.
    """
    from transformers import LlavaOnevisionConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    _check_architecture(architecture)
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in special_tokens(architecture)}
    text = _text_config(len(tokenizer), special)
    if architecture == "llava_onevision":
        vision = {
            "model_type": "siglip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": LLAVA_IMAGE_SIZE,
            "patch_size": LLAVA_PATCH_SIZE,
            "vision_use_head": False,
        }
        # A plain Qwen2 language model: 1D positions, so no mrope section.
        text = {**text, "model_type": "qwen2", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
        side = LLAVA_IMAGE_SIZE
        config = LlavaOnevisionConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=special["<image>"],
            video_token_index=special["<video>"],
            # The released checkpoints take every patch of the last vision layer.
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]],
            tie_word_embeddings=False,
        )
    else:
        ids = {
            "image_token_id": special["<|image_pad|>"],
            "video_token_id": special["<|video_pad|>"],
            "vision_start_token_id": special["<|vision_start|>"],
            "vision_end_token_id": special["<|vision_end|>"],
        }
        if architecture == "qwen2_5_vl":
            vision = {
                "depth": 2,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_heads": 4,
                "out_hidden_size": 128,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "spatial_merge_size": 2,
                "window_size": 56,
                "fullatt_block_indexes": [1],
            }
            config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
        elif architecture == "qwen2_vl":
            vision = {
                "depth": 2,
                "embed_dim": 64,
                "hidden_size": 128,
                "mlp_ratio": 2,
                "num_heads": 4,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "spatial_merge_size": 2,
            }
            config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
        else:
            vision = {
                "depth": 2,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_heads": 4,
                "out_hidden_size": 128,
                "patch_size": 16,
                "temporal_patch_size": 2,
                "spatial_merge_size": 2,
                # An 8 x 8 grid of learned positions, resampled to each clip's patch grid.
                "num_position_embeddings": 64,
                # One deepstack merger: the first vision layer's features are added after the first text layer.
                "deepstack_visual_indexes": [0],
            }
            # Qwen3-VL interleaves the time / height / width rotary frequencies; head_dim is set explicitly.
            text = {
                **text,
                "head_dim": 32,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "mrope_section": [6, 5, 5],
                    "mrope_interleaved": True,
                },
            }
            config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        text["bos_token_id"],
        text["eos_token_id"],
        text["pad_token_id"],
    )
    return config


def _processor(architecture: str, tokenizer, image_processor, video_processor):
    from transformers import LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor

    parts = {"image_processor": image_processor, "tokenizer": tokenizer, "video_processor": video_processor}
    template = chat_template(architecture)
    if architecture == "llava_onevision":
        patches_per_side = LLAVA_IMAGE_SIZE // LLAVA_PATCH_SIZE
        return LlavaOnevisionProcessor(
            **parts,
            num_image_tokens=patches_per_side * patches_per_side,
            vision_feature_select_strategy="full",
            chat_template=template,
            image_token="<image>",
            video_token="<video>",
        )
    processor_class = {
        "qwen2_5_vl": Qwen2_5_VLProcessor,
        "qwen2_vl": Qwen2VLProcessor,
        "qwen3_vl": Qwen3VLProcessor,
    }[architecture]
    return processor_class(**parts, chat_template=template)


def build_tiny_vlm(
    output_dir: str | Path,
    corpus: Iterable[str] | None = None,
    architecture: str = "qwen2_5_vl",
    seed: int = 0,
    fps: float = 8.0,
    vocab_size: int = 1024,
) -> Path:
    """Write a tiny, randomly initialised video VLM and its processor to `output_dir`.

    Args:
        output_dir: where to save; loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
        corpus: texts the tokenizer's merges are trained on (prompts and answers of the task); defaults to the
            shapes task's prompts and class names.
        architecture: `qwen2_5_vl`, `qwen2_vl`, `qwen3_vl` or `llava_onevision`.
        seed: initialisation seed (the same seed gives the same weights).
        fps: the frame rate the Qwen2/2.5-VL video processor assumes when none is given.
        vocab_size: BPE vocabulary size including the 256 byte symbols and the special tokens.
    """
    from transformers import AutoModelForImageTextToText

    _check_architecture(architecture)
    output_dir = Path(output_dir)
    if corpus is None:
        from vstar.tasks.shapes import tokenizer_corpus

        corpus = tokenizer_corpus()
    tokenizer = build_tokenizer(list(corpus), vocab_size=vocab_size, architecture=architecture)
    config = build_config(architecture, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = [config.eos_token_id, config.pad_token_id]
    image_processor, video_processor = _vision_processors(architecture, fps)
    processor = _processor(architecture, tokenizer, image_processor, video_processor)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Wrote a tiny %s (%.2fM parameters) to %s", architecture, n_params / 1e6, output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--architecture", default="qwen2_5_vl", choices=ARCHITECTURES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    build_tiny_vlm(args.output_dir, architecture=args.architecture, seed=args.seed)


if __name__ == "__main__":
    main()
