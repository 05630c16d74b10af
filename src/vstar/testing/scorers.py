"""Tiny, randomly initialised video-text scorers (CLIP, SigLIP, X-CLIP) built entirely offline.

Real transformers model classes with small configs (32 x 32 frames, 8 px patches, two 32-wide layers per tower), a
CLIP byte-level BPE tokenizer trained on the texts the scorer will see, and the architecture's processor. Saved with
`save_pretrained`, so `vstar select --scorer DIR` and `vstar train-scorer --model DIR` load them like any Hub
checkpoint. Untrained they score at random; `vstar train-scorer` teaches them in seconds on synthetic clips.

```bash
python -m vstar.testing.scorers /tmp/tiny-clip --architecture clip
```
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ARCHITECTURES = ("clip", "siglip", "x_clip")
IMAGE_SIZE = 32
PATCH_SIZE = 8
TEXT_LENGTH = 32
DEFAULT_CORPUS = (
    "a red square moving left",
    "an orange green yellow lime teal cyan azure blue violet magenta pink square moving right up down",
    "the video shows a coloured shape crossing a dark background",
)


def build_clip_tokenizer(corpus: Iterable[str], vocab_size: int = 600):
    """A `CLIPTokenizer` (byte-level BPE, `</w>` word ends, lower case) whose merges are trained on `corpus`.

    Byte-level means any text still encodes; the merges only make the corpus's own words single tokens.

    Args:
        corpus: texts the merges are trained on.
        vocab_size: vocabulary size including the byte symbols and the special tokens.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=alphabet,
        special_tokens=specials,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = dict(state["vocab"])
    # A single byte at a word's end is `x</w>`: make every such symbol known so no text falls back to unknown.
    for symbol in alphabet:
        vocab.setdefault(symbol + "</w>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _configs(architecture: str, vocab_size: int, projection_dim: int, num_frames: int) -> dict:
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": TEXT_LENGTH,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
    }
    if architecture == "siglip":
        return {"text_config": text, "vision_config": vision}
    if architecture == "x_clip":
        return {
            "text_config": text,
            "vision_config": {
                **vision,
                "num_frames": num_frames,
                "mit_hidden_size": 32,
                "mit_intermediate_size": 64,
                "mit_num_hidden_layers": 1,
                "mit_num_attention_heads": 2,
            },
            "projection_dim": projection_dim,
            "prompt_layers": 1,
            "prompt_num_attention_heads": 2,
            "prompt_attention_dropout": 0.0,
            "prompt_projection_dropout": 0.0,
        }
    return {"text_config": text, "vision_config": vision, "projection_dim": projection_dim}


def build_tiny_scorer(
    output_dir: str | Path,
    architecture: str = "clip",
    corpus: Iterable[str] = DEFAULT_CORPUS,
    projection_dim: int = 32,
    num_frames: int = 4,
    seed: int = 0,
) -> Path:
    """Build and save a tiny random video-text scorer with a tokenizer trained on `corpus`.

    Args:
        output_dir: where the model, processor and scorer settings are written.
        architecture: `clip`, `siglip` or `x_clip`.
        corpus: texts the tokenizer is trained on (the captions it will score).
        projection_dim: width of the shared embedding space (CLIP, X-CLIP).
        num_frames: frames sampled per clip (X-CLIP's cross-frame encoder is built for this many).
        seed: seed of the random weights.

    Returns:
        `output_dir`, loadable with `vstar.scoring.VideoTextScorer.from_pretrained`.
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        XCLIPConfig,
        XCLIPModel,
        XCLIPProcessor,
    )

    from vstar.scoring import VideoTextScorer

    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown tiny scorer {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    tokenizer = build_clip_tokenizer(list(corpus) + list(DEFAULT_CORPUS))
    configs = _configs(architecture, len(tokenizer), projection_dim, num_frames)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    configs["text_config"].update(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    torch.manual_seed(seed)
    if architecture == "siglip":
        # SigLIP pools the text's last position; `VideoTextScorer` pads its texts to the full length for it.
        model = SiglipModel(SiglipConfig(**configs))
        processor = SiglipProcessor(image_processor=SiglipImageProcessor(size=size), tokenizer=tokenizer)
    else:
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size=size, do_center_crop=True, do_resize=True
        )
        if architecture == "x_clip":
            model = XCLIPModel(XCLIPConfig(**configs))
            processor = XCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        else:
            model = CLIPModel(CLIPConfig(**configs))
            processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    output_dir = Path(output_dir)
    VideoTextScorer(model, processor, num_frames=num_frames).save_pretrained(output_dir)
    logger.info("Wrote a tiny %s scorer (%d parameters) to %s", architecture, model.num_parameters(), output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--architecture", default="clip", choices=ARCHITECTURES)
    parser.add_argument("--num_frames", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    build_tiny_scorer(args.output_dir, args.architecture, num_frames=args.num_frames, seed=args.seed)


if __name__ == "__main__":
    main()


def colour_caption(color: str, direction: str | None = None) -> str:
    """The caption of a synthetic clip: what it shows, in words (its colour, and its motion when given)."""
    return f"a {color} square moving {direction}" if direction else f"a {color} square"


def build_colour_pairs(
    output: str | Path,
    num_train: int = 200,
    num_test: int = 0,
    swap_fraction: float = 0.0,
    colors: Iterable[str] | None = None,
    size: int = 32,
    num_frames: int = 4,
    name_direction: bool = True,
    seed: int = 0,
) -> Path:
    """A dataset of (clip, caption) pairs: real H.264 clips of a coloured square, captioned by their content.

    Each split is a source dataset (`vstar.sources.base.write_source_dataset`) with `color`, `direction`, a
    `description` naming both, and `swapped` (True where the caption belongs to another clip). With
    `swap_fraction` > 0 that share of the train rows get the caption of another swapped row (a permutation that
    moves every one of them), as web captions drift from their clips; the test split stays clean.

    Args:
        output: the dataset folder.
        num_train: train pairs.
        num_test: test pairs (always correct).
        swap_fraction: share of train captions swapped.
        colors: the colours drawn from (default: all twelve of `vstar.sources.shapes.COLORS`).
        size: frame side in pixels.
        num_frames: frames per clip (at 8 fps).
        name_direction: captions name the direction of motion too (else only the colour).
        seed: the seed; the same seed gives the same clips and swaps.
    """
    import numpy as np
    from datasets import Value

    from vstar.schema import source_features
    from vstar.sources.base import write_source_dataset
    from vstar.sources.shapes import COLORS, DIRECTIONS, render_clip
    from vstar.video import encode_video

    palette = list(colors or COLORS)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[dict]] = {}
    for split, count in (("train", num_train), ("test", num_test)):
        rows = []
        for i in range(count):
            color = str(rng.choice(palette))
            direction = str(rng.choice(list(DIRECTIONS)))
            frames = render_clip(rng, color, direction, 2, size, num_frames, max(4, size * 3 // 8))
            clip_id = f"pair-{split}-{i:05d}"
            rows.append(
                {
                    "id": clip_id,
                    "video": {"bytes": encode_video(frames, 8.0), "path": f"{clip_id}.mp4"},
                    "start": None,
                    "end": None,
                    "source": "colour-pairs",
                    "split": split,
                    "color": color,
                    "direction": direction,
                    "description": colour_caption(color, direction if name_direction else None),
                    "swapped": False,
                }
            )
        splits[split] = rows
    swapped = sorted(rng.choice(num_train, size=int(round(swap_fraction * num_train)), replace=False).tolist())
    if len(swapped) > 1:
        # A cyclic shift of a random order moves every chosen caption to another chosen row.
        order = [swapped[i] for i in rng.permutation(len(swapped))]
        captions = [splits["train"][i]["description"] for i in order]
        for at, row in enumerate(order):
            splits["train"][row]["description"] = captions[(at + 1) % len(order)]
            splits["train"][row]["swapped"] = True
    features = source_features(
        {
            "color": Value("string"),
            "direction": Value("string"),
            "description": Value("string"),
            "swapped": Value("bool"),
        }
    )
    return write_source_dataset(
        {split: rows for split, rows in splits.items() if rows},
        features,
        output,
        card={
            "pretty_name": "vstar colour pairs",
            "description": f"Synthetic clip-caption pairs; {len(swapped)} train captions swapped to another clip.",
            "license": "cc0-1.0",
            "build_command": "vstar.testing.scorers.build_colour_pairs",
        },
    )
