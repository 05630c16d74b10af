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


def _byte_symbols() -> dict[int, str]:
    """GPT-2's byte-to-symbol table, which CLIP's byte-level BPE uses: printable bytes stand for themselves."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    symbols = dict(zip(kept, map(chr, kept), strict=True))
    for extra, byte in enumerate(b for b in range(256) if b not in symbols):
        symbols[byte] = chr(256 + extra)
    return symbols


def build_clip_tokenizer(corpus: Iterable[str]):
    """A `CLIPTokenizer` (byte-level BPE, `</w>` word ends, lower case) whose merges spell the corpus's words.

    Every byte is a symbol, so any text encodes; each corpus word gets the merges that join its symbols left to
    right (most frequent words first), so the same corpus always gives the same vocabulary and ids (a trained BPE
    breaks ties differently from run to run, and a tiny model's results with it).

    Args:
        corpus: texts whose words the merges spell.
    """
    import re
    from collections import Counter

    from transformers import CLIPTokenizer

    table = _byte_symbols()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in sorted(table.values()):
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    # CLIP's pre-tokenizer: runs of letters, single digits, runs of other non-space characters.
    words = Counter(w for text in corpus for w in re.findall(r"[^\W\d_]+|\d|[^\w\s]+", text.lower()))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        joined = symbols[0]
        for symbol in symbols[1:]:
            pair = (joined, symbol)
            joined += symbol
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
                vocab.setdefault(joined, len(vocab))
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
