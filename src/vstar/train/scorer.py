"""`vstar train-scorer`: fine-tune a video-text scorer (CLIP, SigLIP or X-CLIP) on (clip, caption) pairs.

The loss is symmetric InfoNCE (`loss: infonce`) or MAMA's subtractive angular margin (`loss: angular_margin`,
margin `mu` 0.05), both with a learnt logit scale starting at 100 (`vstar.train.contrastive`). With
`sample_weighting: meta` each pair's loss is weighted by a Meta-Weight-Net (MAMA, `vstar.train.weighting`): a small
MLP maps the loss to a weight and is trained through a one-step look-ahead of the scorer, so that the look-ahead
model does best on a batch of a clean `meta_dataset`; the weights of every step are logged and saved
(`sample_weights.parquet`). The saved model is what `vstar select --scorer` loads.

```bash
vstar train-scorer --pairs data/pairs --model runs/tiny-clip --output runs/scorer --loss angular_margin
vstar train-scorer --pairs data/pairs --model runs/tiny-clip --output runs/scorer-meta --loss angular_margin \
    --sample_weighting meta --meta_dataset data/seed-pairs
```
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Features, Value
from torch import nn
from tqdm.auto import tqdm

from vstar.configs import _check_choice, _check_range, check_reference, parse_configs
from vstar.errors import InputError
from vstar.io import load_split, write_parquet
from vstar.scoring import VideoTextScorer, clip_frames
from vstar.train.contrastive import (
    DEFAULT_MARGIN,
    INIT_LOG_SCALE,
    LOSSES,
    LogitScale,
    contrastive_loss,
    same_text_mask,
)

logger = logging.getLogger(__name__)

# Per step and pair: its loss, its weight in the step (normalised to mean 1 over the batch) and the weight net's
# output before normalisation, in (0, 1).
SAMPLE_WEIGHT_FEATURES = Features(
    {
        "step": Value("int32"),
        "row": Value("int64"),
        "id": Value("string"),
        "loss": Value("float32"),
        "weight": Value("float32"),
        "raw_weight": Value("float32"),
    }
)


@dataclass
class ScorerTrainConfig:
    """`vstar train-scorer`: contrastive fine-tuning of a video-text scorer on (clip, caption) pairs."""

    pairs: str = field(default="", metadata={"help": "Dataset of pairs (folder or Hub id): video, start, end, text."})
    pairs_revision: str | None = field(default=None, metadata={"help": "Revision of the pairs dataset."})
    split: str = field(default="train", metadata={"help": "Split of `pairs` to train on."})
    text_column: str = field(
        default="description", metadata={"help": "Column with each clip's caption (`vstar select` keeps it)."}
    )
    model: str = field(default="", metadata={"help": "Scorer to start from: a CLIP, SigLIP or X-CLIP folder or id."})
    output: str = field(default="runs/scorer", metadata={"help": "Folder the trained scorer is written to."})
    loss: str = field(default="infonce", metadata={"help": "`infonce` or `angular_margin` (MAMA)."})
    margin: float = field(default=DEFAULT_MARGIN, metadata={"help": "Angular margin mu in radians (MAMA: 0.05)."})
    init_log_scale: float = field(
        default=INIT_LOG_SCALE,
        metadata={
            "help": "Starting log of the logit scale: ln 100 (4.605), where a pretrained CLIP's ends, as MAMA "
            "fine-tunes; from random weights ln(1/0.07) = 2.659 (CLIP's start) avoids the angular margin's collapse."
        },
    )
    learn_scale: bool = field(default=True, metadata={"help": "Learn the logit scale (else keep it fixed)."})
    exclude_same_text: bool = field(
        default=True,
        metadata={"help": "A pair whose caption repeats in the batch is not a negative of the other (not in MAMA)."},
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per clip (default: the scorer's own)."})
    batch_size: int = field(default=32, metadata={"help": "Pairs per step (each is the others' negatives)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the scorer."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_epochs: float = field(default=10.0, metadata={"help": "Passes over the pairs (unless max_steps is set)."})
    max_steps: int | None = field(default=None, metadata={"help": "Train this many steps instead."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps with linear warm-up."})
    seed: int = field(default=0, metadata={"help": "Seed of the shuffling and the weight net."})
    sample_weighting: str = field(default="none", metadata={"help": "`none` or `meta` (Meta-Weight-Net, MAMA)."})
    meta_dataset: str | None = field(
        default=None, metadata={"help": "Clean pairs the weight net is meta-trained on (the seed set in a loop)."}
    )
    meta_split: str = field(default="train", metadata={"help": "Split of `meta_dataset`."})
    meta_batch_size: int = field(default=32, metadata={"help": "Clean pairs per meta step."})
    meta_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the weight net."})
    meta_hidden_size: int = field(default=64, metadata={"help": "Hidden width of the weight net (MAMA: 64)."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to measure recall@1 on after training (e.g. `test`)."}
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Dataset holding `eval_split` (default: `pairs`)."}
    )
    log_every: int = field(default=10, metadata={"help": "Steps between log lines."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for CPU runs."})
    device: str | None = field(default=None, metadata={"help": "Where training runs (default: cuda when present)."})

    def __post_init__(self):
        _check_choice(self, "loss", LOSSES)
        _check_choice(self, "sample_weighting", ("none", "meta"))
        _check_range(self, "margin", 0, math.pi / 2)
        _check_range(self, "num_frames", 1, optional=True)
        _check_range(self, "batch_size", 2, what="contrastive steps need negatives in the batch")
        _check_range(self, "learning_rate", 0)
        _check_range(self, "weight_decay", 0)
        _check_range(self, "num_epochs", 0, low_open=True)
        _check_range(self, "max_steps", 1, optional=True)
        _check_range(self, "warmup_ratio", 0, 1)
        _check_range(self, "meta_batch_size", 2)
        _check_range(self, "meta_learning_rate", 0)
        _check_range(self, "meta_hidden_size", 1)
        _check_range(self, "log_every", 1)
        _check_range(self, "torch_threads", 1, optional=True)
        if self.sample_weighting == "meta" and not self.meta_dataset:
            from vstar.errors import ConfigError

            raise ConfigError(
                "sample_weighting meta needs --meta_dataset: a small set of clean pairs (the seed set of a loop)"
            )


@dataclass
class Pairs:
    """Decoded pairs: processed frames `(N, T, C, H, W)`, their texts and ids."""

    pixel_values: torch.Tensor
    texts: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def load_pairs(
    scorer: VideoTextScorer, dataset: str, split: str, text_column: str, revision: str | None = None
) -> Pairs:
    """Decode every clip of a split once (frames in each row's `start`/`end` window) and keep its caption.

    Args:
        scorer: gives the frame count and the image processor.
        dataset: folder or Hub id with `video`, `start`, `end` and `text_column`.
        split: the split.
        text_column: the caption column.
        revision: dataset revision.

    Raises:
        InputError: a missing column, or a clip that cannot be decoded (naming its row).
    """
    data = load_split(dataset, split, revision=revision)
    missing = [c for c in ("video", text_column) if c not in data.column_names]
    if missing:
        raise InputError(
            f"{dataset} split {split!r} has no column {', '.join(missing)} (columns: {', '.join(data.column_names)}); "
            "give pairs with `video`, `start`, `end` and the caption column (--text_column)."
        )
    from vstar.video import VideoDecodeError

    pixels, texts, ids = [], [], []
    columns = [c for c in ("id", "video", "start", "end", text_column) if c in data.column_names]
    for i, row in enumerate(tqdm(data.select_columns(columns), desc=f"decode {split}", leave=False)):
        text = row[text_column]
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{dataset} split {split!r} row {i}: empty {text_column!r}; drop the row or fill it.")
        try:
            frames = clip_frames(row["video"], row.get("start"), row.get("end"), scorer.num_frames)
        except VideoDecodeError as err:
            raise InputError(f"{dataset} split {split!r} row {i}: {err}") from None
        pixels.append(scorer.pixel_values([frames]).cpu())
        texts.append(text)
        ids.append(str(row.get("id", i)))
    if not texts:
        raise InputError(f"{dataset} split {split!r} has no rows.")
    return Pairs(torch.cat(pixels), texts, ids)


class _ScorerWithScale(nn.Module):
    """The scorer's model and the loss's logit scale as one module, so a look-ahead can swap all their weights."""

    def __init__(self, scorer: VideoTextScorer, scale: LogitScale):
        super().__init__()
        self.scorer = scorer
        self.model = scorer.model
        self.scale = scale

    def forward(self, pixel_values: torch.Tensor, text_inputs: dict[str, torch.Tensor]):
        return self.scorer.cosine(pixel_values, text_inputs), self.scale()


def recall_at_1(scorer: VideoTextScorer, pairs: Pairs, batch_size: int = 64) -> float:
    """Video-to-text recall@1 over the distinct captions of `pairs`: the share of clips whose best-scoring caption
    is their own (clips that share a caption share its gallery entry)."""
    gallery = sorted(set(pairs.texts))
    index = {text: i for i, text in enumerate(gallery)}
    was_training = scorer.model.training
    scorer.model.eval()
    hits = 0
    with torch.no_grad():
        text_inputs = scorer.text_inputs(gallery)
        for at in range(0, len(pairs), batch_size):
            pixels = pairs.pixel_values[at : at + batch_size].to(scorer.device)
            best = scorer.cosine(pixels, text_inputs).argmax(dim=1).cpu()
            hits += sum(int(b) == index[t] for b, t in zip(best, pairs.texts[at : at + batch_size], strict=True))
    scorer.model.train(was_training)
    return hits / len(pairs)


def _cosine_summary(cosine: torch.Tensor) -> dict[str, float]:
    # The mean cosine of the batch's pairs and of its other combinations: the gap is what the scorer has learnt.
    diagonal = torch.eye(len(cosine), dtype=torch.bool, device=cosine.device)
    return {"pair_cosine": float(cosine[diagonal].mean()), "other_cosine": float(cosine[~diagonal].mean())}


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_scorer(config: ScorerTrainConfig) -> dict[str, Any]:
    """Train a scorer on `config.pairs` and save it to `config.output` (loadable by `vstar select --scorer`).

    Writes `training_log.jsonl` (per step: loss, scale, learning rate), `train_config.json`, with meta-weighting
    `sample_weights.parquet` (per step and pair: loss and weight), and `metrics.json`.

    Args:
        config: the settings.

    Returns:
        The metrics: steps, final loss, scale, seconds, and `recall_at_1` when `eval_split` is set.
    """
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    check_reference(config.pairs, "pairs", "pairs dataset")
    check_reference(config.model, "model", "scorer model")
    if config.meta_dataset:
        check_reference(config.meta_dataset, "meta_dataset", "clean pairs dataset")
    if config.eval_dataset:
        check_reference(config.eval_dataset, "eval_dataset", "held-out pairs dataset")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    # The look-ahead differentiates twice, which PyTorch's fused CPU attention kernels do not support.
    attention = "eager" if config.sample_weighting == "meta" else None
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorer = VideoTextScorer.from_pretrained(
        config.model, num_frames=config.num_frames, device=device, attn_implementation=attention
    )
    pairs = load_pairs(scorer, config.pairs, config.split, config.text_column, config.pairs_revision)
    if len(pairs) < 2:
        raise InputError(
            f"{config.pairs} split {config.split!r} has {len(pairs)} pair: contrastive training needs 2+."
        )
    held_out = None
    if config.eval_split:
        # Decoded before training, so a missing split stops the run before any step, not after all of them.
        eval_dataset = config.eval_dataset or config.pairs
        revision = None if config.eval_dataset else config.pairs_revision
        held_out = load_pairs(scorer, eval_dataset, config.eval_split, config.text_column, revision)
    meta = None
    if config.sample_weighting == "meta":
        meta = load_pairs(scorer, config.meta_dataset, config.meta_split, config.text_column)
    scale = LogitScale(config.init_log_scale).to(device)
    scale.log_scale.requires_grad_(config.learn_scale)
    module = _ScorerWithScale(scorer, scale)
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    batch_size = min(config.batch_size, len(pairs))
    steps_per_epoch = max(1, len(pairs) // batch_size)
    total = config.max_steps or max(1, math.ceil(config.num_epochs * steps_per_epoch))
    scheduler = _schedule(optimizer, total, int(config.warmup_ratio * total))
    weighting = None
    if meta is not None:
        from vstar.train.weighting import MetaWeighting

        weighting = MetaWeighting(config.meta_hidden_size, config.meta_learning_rate, seed=config.seed, device=device)
        params = {name: p for name, p in module.named_parameters() if p.requires_grad}

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def sample_losses(forward, batch) -> torch.Tensor:
        # `forward` is the scorer under the current or the look-ahead weights; what it saw is kept for the log.
        inputs, exclude = batch
        cosine, s = forward(*inputs)
        seen.append((cosine.detach(), s.detach()))
        return contrastive_loss(config.loss, cosine, s, config.margin, exclude)

    def batch_of(data: Pairs, rows: list[int]):
        texts = [data.texts[i] for i in rows]
        exclude = same_text_mask(texts) if config.exclude_same_text else None
        return (data.pixel_values[rows].to(scorer.device), scorer.text_inputs(texts)), exclude

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    weights_log: list[dict[str, Any]] = []
    order: list[int] = []
    started = time.perf_counter()
    last = {}
    with (output / "training_log.jsonl").open("w") as log:
        for step in tqdm(range(total), desc=f"train-scorer ({config.loss})", leave=False):
            if len(order) < batch_size:
                epoch = list(range(len(pairs)))
                rng.shuffle(epoch)
                order += epoch
            rows, order = order[:batch_size], order[batch_size:]
            batch = batch_of(pairs, rows)
            weights = raw_weights = None
            if weighting is None:
                cosine, s = module(*batch[0])
                losses = contrastive_loss(config.loss, cosine, s, config.margin, batch[1])
                loss = losses.mean()
            else:
                meta_rows = rng.sample(range(len(meta)), min(config.meta_batch_size, len(meta)))
                seen.clear()
                meta_step = weighting.step(
                    module, params, sample_losses, batch, batch_of(meta, meta_rows), scheduler.get_last_lr()[0]
                )
                # The losses keep their graph: the real step needs no second forward. Weights average 1.
                losses, weights, raw_weights = meta_step.losses, meta_step.weights, meta_step.raw_weights
                loss = (weights * losses).mean()
                cosine, s = seen[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            last = {
                "step": step + 1,
                "loss": float(losses.detach().mean()),
                "scale": float(s.detach()),
                "learning_rate": scheduler.get_last_lr()[0],
                **_cosine_summary(cosine.detach()),
            }
            if weights is not None:
                last["raw_weight_mean"] = float(raw_weights.mean())
                last["meta_loss"] = meta_step.meta_loss
                weights_log += [
                    {"step": step + 1, "row": r, "id": pairs.ids[r], "loss": v, "weight": w, "raw_weight": raw}
                    for r, v, w, raw in zip(
                        rows, losses.detach().tolist(), weights.tolist(), raw_weights.tolist(), strict=True
                    )
                ]
            log.write(json.dumps(last) + "\n")
            if (step + 1) % config.log_every == 0 or step + 1 == total:
                logger.info("step %d/%d loss %.4f scale %.1f", step + 1, total, last["loss"], last["scale"])
    seconds = time.perf_counter() - started
    module.eval()
    scorer.save_pretrained(
        output, loss=config.loss, margin=config.margin, log_scale=float(scale.log_scale.detach()), trained_steps=total
    )
    (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    if weights_log:
        write_parquet(output / "sample_weights.parquet", weights_log, SAMPLE_WEIGHT_FEATURES)
    metrics: dict[str, Any] = {
        "steps": total,
        "pairs": len(pairs),
        "final_loss": last.get("loss"),
        "scale": last.get("scale"),
        "train_seconds": round(seconds, 2),
    }
    if held_out is not None:
        metrics["recall_at_1"] = recall_at_1(scorer, held_out)
        metrics["eval_pairs"] = len(held_out)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("Trained scorer in %s: %s", output, metrics)
    return metrics


def main(argv: list[str]) -> None:
    (config,) = parse_configs((ScorerTrainConfig,), argv)
    train_scorer(config)
