"""Tiny, randomly initialised video language models built entirely offline.

Real transformers classes (Qwen2.5-VL, Qwen2-VL) with small configs, a byte-level BPE tokenizer trained on
the texts the model will see, and a processor whose video processor resizes clips to a handful of patches.
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

ARCHITECTURES = ("qwen2_5_vl", "qwen2_vl")

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

# 56 x 56 pixels = 4 x 4 patches of 14 px = 2 x 2 merged tokens per pair of frames.
FRAME_PIXELS = 56 * 56


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """Train a byte-level BPE on `corpus` and wrap it as a `Qwen2Tokenizer` with the Qwen special tokens.

    Byte-level means any text can still be encoded; the merges only make the corpus's own texts short.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

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
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    model_state = __import__("json").loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model_state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def _vision_processors(fps: float):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

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
    """A small config of a real video VLM class whose special token ids point into `tokenizer`."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    ids = {
        "image_token_id": special["<|image_pad|>"],
        "video_token_id": special["<|video_pad|>"],
        "vision_start_token_id": special["<|vision_start|>"],
        "vision_end_token_id": special["<|vision_end|>"],
    }
    text = _text_config(len(tokenizer), special)
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
        raise ValueError(f"Unknown tiny architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        text["bos_token_id"],
        text["eos_token_id"],
        text["pad_token_id"],
    )
    return config


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
        architecture: `qwen2_5_vl` or `qwen2_vl`.
        seed: initialisation seed (the same seed gives the same weights).
        fps: the frame rate the video processor assumes when none is given.
        vocab_size: BPE vocabulary size including the 256 byte symbols and the special tokens.
    """
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLProcessor, Qwen2VLProcessor

    output_dir = Path(output_dir)
    if corpus is None:
        from vstar.tasks.shapes import tokenizer_corpus

        corpus = tokenizer_corpus()
    tokenizer = build_tokenizer(list(corpus), vocab_size=vocab_size)
    config = build_config(architecture, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = [config.eos_token_id, config.pad_token_id]
    image_processor, video_processor = _vision_processors(fps)
    processor_class = Qwen2_5_VLProcessor if architecture == "qwen2_5_vl" else Qwen2VLProcessor
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
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
