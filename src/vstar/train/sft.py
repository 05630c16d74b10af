"""Supervised finetuning of a video LLM on an instruction dataset: TRL `SFTTrainer` + PEFT LoRA + video collator.

```bash
accelerate launch --config_file recipes/accelerate_configs/cpu.yaml -m vstar.cli train \
    --config recipes/demo/config_shapes_tiny.yaml --dataset runs/demo/cycle-1/dataset --output_dir /tmp/model
vstar train --config recipes/demo/config_shapes_tiny.yaml --dataset DIR --output_dir OUT \
    --loss_type tailr --sample_weighting meta --meta_dataset runs/demo/seed
```

Noise-robust settings (docs/noise.md): `loss_type` `ce` (TRL's own loss), `tailr` (TaiLr token weights,
`vstar.train.losses`) or `adaptive_tailr` (vstar's own: gamma from a noise estimate, which `vstar cycle` measures each
cycle); `sample_weighting: meta` weighs each sample by a Meta-Weight-Net trained on a clean `meta_dataset`
(`vstar.train.weighting`) and writes the weights to `sample_weights.parquet`.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig

from vstar.errors import ConfigError
from vstar.train.collator import VideoSFTCollator
from vstar.train.losses import LOSS_TYPES, TokenLoss, adaptive_gamma, reduce_tokens

logger = logging.getLogger(__name__)

SAMPLE_WEIGHTINGS = ("none", "meta")
SAMPLE_WEIGHTS_FILE = "sample_weights.parquet"
# A batch key the collator adds under meta-weighting (each row's id), removed before the model sees the batch.
SAMPLE_IDS = "vstar_sample_ids"

# Linear layers of the language model in Qwen2/2.5/3-VL, LLaVA-OneVision, SmolVLM2 and Video-LLaVA checkpoints.
LANGUAGE_LINEAR = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
LORA_TARGETS = {"language": LANGUAGE_LINEAR, "all": "all-linear"}


@dataclass
class VStarSFTConfig(SFTConfig):
    """Training settings: everything `trl.SFTConfig` has, plus the model, data and finetuning method."""

    model_name_or_path: str = field(default="", metadata={"help": "Base model (Hub id or local directory)."})
    dataset: str = field(default="", metadata={"help": "Instruction dataset: a directory or a Hub repo id."})
    dataset_config: str = field(default="default", metadata={"help": "Dataset config holding the accepted rows."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision (branch, tag, sha)."})
    drop_rationalized: bool = field(
        default=False, metadata={"help": "Train only on direct answers (the paper's choice for the final model)."}
    )
    finetuning: str = field(default="lora", metadata={"help": "`lora` or `full`."})
    lora_target: str = field(
        default="language",
        metadata={
            "help": "`language` (the language model's linear layers), `all` (also the vision tower), or a regex."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full and saved with the adapter (e.g. a random vision `merger`)."},
    )
    init_adapter: str | None = field(
        default=None, metadata={"help": "Continue training this adapter instead of starting a new one."}
    )
    num_frames: int | None = field(default=8, metadata={"help": "Frames sampled per clip."})
    video_fps: float | None = field(default=None, metadata={"help": "Sample this many frames per second instead."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for CPU runs."})
    clip_cache_mb: int = field(
        default=1024,
        metadata={"help": "Memory for decoded clips kept between epochs, per process (each DataLoader worker)."},
    )

    # Noise-robust training (docs/noise.md). `loss_type` replaces TRL's field of the same name: `ce` is TRL's own loss
    # (`nll` is accepted for it, and TRL's `dft` is passed through).
    loss_type: str = field(
        default="ce",
        metadata={
            "help": "Token loss: `ce` (cross-entropy), `tailr` (TaiLr: each answer token's NLL weighted by "
            "p / (gamma + (1 - gamma) p), clamped to [tailr_min_weight, 1]) or `adaptive_tailr` (vstar's own variant: "
            "gamma = the noise estimate clipped to [adaptive_gamma_min, adaptive_gamma_max])."
        },
    )
    tailr_gamma: float = field(
        default=0.1, metadata={"help": "TaiLr's gamma in [0, 1] (0 is cross-entropy; TaiLr's runs: 0.1 and 0.8)."}
    )
    tailr_min_weight: float = field(
        default=0.3, metadata={"help": "TaiLr's smallest token weight (TaiLr's runs: 0.3 with gamma 0.1)."}
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing epsilon of the token loss, any `loss_type` (TRL: label_smoothing_factor)."},
    )
    tailr_noise_estimate: float | None = field(
        default=None,
        metadata={
            "help": "adaptive_tailr: the estimated share of wrong answers in the data, in [0, 1]. `vstar cycle` sets "
            "it per cycle (1 - the cycle's direct yield); unset, `tailr_gamma` is used."
        },
    )
    adaptive_gamma_min: float = field(default=0.05, metadata={"help": "adaptive_tailr: the smallest gamma."})
    adaptive_gamma_max: float = field(default=0.8, metadata={"help": "adaptive_tailr: the largest gamma."})
    sample_weighting: str = field(
        default="none",
        metadata={
            "help": "`none`, or `meta`: weigh each sample by a Meta-Weight-Net (MLP 1->64->1 on its loss) trained "
            "through a one-step look-ahead on a batch of `meta_dataset` (MAMA); the weights are saved to "
            "sample_weights.parquet."
        },
    )
    meta_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Clean instruction dataset (folder or Hub id) the weight net is meta-trained on; `vstar cycle` "
            "defaults it to the seed set (`control_dataset`)."
        },
    )
    meta_dataset_config: str = field(default="default", metadata={"help": "Config of `meta_dataset`."})
    meta_dataset_split: str = field(default="train", metadata={"help": "Split of `meta_dataset`."})
    meta_batch_size: int | None = field(
        default=None, metadata={"help": "Rows per meta batch (default: per_device_train_batch_size)."}
    )
    meta_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the weight net."})
    meta_weight_decay: float = field(default=1e-4, metadata={"help": "Adam weight decay of the weight net."})
    meta_hidden_size: int = field(default=64, metadata={"help": "Hidden width of the weight net (MAMA: 64)."})
    meta_lookahead_lr: float | None = field(
        default=None,
        metadata={"help": "Step size of the virtual SGD look-ahead step (default: the current learning rate)."},
    )

    # TRL defaults the deprecated alias to True, so every config that leaves it alone warns under transformers 5;
    # unset here, it still works when given, and checkpointing stays on by default (TRL's choice) in __post_init__.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (transformers 5)."}
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        if not torch.cuda.is_available():
            self.use_cpu, self.bf16, self.fp16 = True, False, False
        # Video rows must reach the collator whole; the collator tokenises and truncation would cut video tokens.
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self.max_length = None
        if self.video_fps is not None:
            self.num_frames = None
        if self.loss_type == "nll":
            self.loss_type = "ce"
        if self.label_smoothing_factor and not self.label_smoothing:
            # TRL's label smoothing would only apply to its own `nll`; vstar's losses take it in any `loss_type`.
            self.label_smoothing, self.label_smoothing_factor = self.label_smoothing_factor, 0.0
        self._check_robust_settings()
        super().__post_init__()

    def _check_robust_settings(self) -> None:
        from vstar.configs import _check_choice, _check_range

        _check_choice(self, "loss_type", (*LOSS_TYPES, "dft"))
        _check_choice(self, "sample_weighting", SAMPLE_WEIGHTINGS)
        _check_range(self, "tailr_gamma", 0, 1)
        _check_range(self, "tailr_min_weight", 0, 1)
        _check_range(self, "label_smoothing", 0, 1)
        _check_range(self, "tailr_noise_estimate", 0, 1, optional=True)
        _check_range(self, "adaptive_gamma_min", 0, 1)
        _check_range(self, "adaptive_gamma_max", self.adaptive_gamma_min, 1)
        _check_range(self, "meta_batch_size", 1, optional=True)
        _check_range(self, "meta_learning_rate", 0)
        _check_range(self, "meta_weight_decay", 0)
        _check_range(self, "meta_hidden_size", 1)
        _check_range(self, "meta_lookahead_lr", 0, optional=True)
        if self.loss_type == "dft" and (self.label_smoothing or self.sample_weighting != "none"):
            raise ConfigError("loss_type dft (TRL's) takes no label_smoothing or sample_weighting: use ce or tailr")

    def token_loss(self) -> TokenLoss | None:
        """The token loss `loss_type` asks for, or None for TRL's own (`ce` without label smoothing, `dft`)."""
        if self.loss_type == "dft" or (self.loss_type == "ce" and not self.label_smoothing):
            return None
        gamma = 0.0
        if self.loss_type == "tailr":
            gamma = self.tailr_gamma
        elif self.loss_type == "adaptive_tailr":
            gamma = self.tailr_gamma
            if self.tailr_noise_estimate is not None:
                gamma = adaptive_gamma(self.tailr_noise_estimate, self.adaptive_gamma_min, self.adaptive_gamma_max)
        min_weight = self.tailr_min_weight if gamma > 0 else 0.0
        return TokenLoss(gamma=gamma, min_weight=min_weight, label_smoothing=self.label_smoothing)


def lora_config(config: VStarSFTConfig):
    from peft import LoraConfig

    target = LORA_TARGETS.get(config.lora_target, config.lora_target)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        modules_to_save=config.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


def load_model_for_training(config: VStarSFTConfig):
    """The base model, wrapped for LoRA (new or continued adapter) unless `finetuning == "full"`."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(config.model_name_or_path, dtype=dtype)
    if config.finetuning == "full":
        return model
    if config.finetuning != "lora":
        raise ValueError(f"finetuning must be `lora` or `full`, not {config.finetuning!r}.")
    if config.init_adapter:
        return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    return get_peft_model(model, lora_config(config))


def load_instruction_rows(config: VStarSFTConfig):
    from vstar.io import load_split

    dataset = load_split(config.dataset, config.dataset_split, config.dataset_config, config.dataset_revision)
    if config.drop_rationalized and "rationalized" in dataset.column_names:
        dataset = dataset.filter(lambda rationalized: not rationalized, input_columns="rationalized")
    if len(dataset) == 0:
        raise ValueError(f"The dataset {config.dataset} ({config.dataset_config}/{config.dataset_split}) is empty.")
    return dataset


class WithSampleIds:
    """A collator wrapper that adds each row's `id` to the batch (under `SAMPLE_IDS`), for the per-sample weights."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        batch[SAMPLE_IDS] = [str(example.get("id", "")) for example in examples]
        return batch


class RobustLossMixin:
    """The token losses and sample weighting of `VStarSFTConfig`, put into TRL's `SFTTrainer` by overriding
    `compute_loss` (the way TRL asks for custom losses).

    - `ce` without label smoothing (and TRL's `dft`): TRL's own loss, untouched.
    - `tailr` / `adaptive_tailr` / label smoothing: the token losses of `vstar.train.losses`, from TRL's fused LM
      head (per-token log-probabilities, no full logits), or from the full logits with label smoothing; summed over
      the supervised tokens and divided by `num_items_in_batch`, like TRL's loss, so gradient accumulation and DDP
      average the same way.
    - `sample_weighting: meta`: each micro-batch first takes a `vstar.train.weighting.MetaWeighting` step (look-ahead
      of the trainable parameters, the clean meta batch's loss, the weight net's update), then trains on
      `sum_i w_i S_i / num_items_in_batch`, where `S_i` is sample i's summed token loss and the weights have mean 1
      over the micro-batch (all 1 gives the unweighted loss). Per-sample losses come from the full logits, which
      the look-ahead differentiates twice.

    Args:
        meta_dataset: the clean rows of the meta set (with `sample_weighting: meta`).
        meta_collator: the collator of the meta batches.
    """

    def __init__(self, *args, meta_dataset=None, meta_collator=None, **kwargs):
        config = kwargs["args"]
        ours = config.loss_type
        # TRL validates its own `loss_type` values; vstar's are computed here, on TRL's `nll` path.
        if ours not in ("nll", "dft"):
            config.loss_type = "nll"
        try:
            super().__init__(*args, **kwargs)
        finally:
            config.loss_type = ours
        self.token_loss = config.token_loss()
        if self.token_loss is not None:
            logger.info(
                "Token loss %s: gamma %.3g, min weight %.3g, label smoothing %.3g",
                config.loss_type,
                self.token_loss.gamma,
                self.token_loss.min_weight,
                self.token_loss.label_smoothing,
            )
        self.meta = None
        self.sample_weight_records: list[dict[str, Any]] = []
        if config.sample_weighting == "meta":
            from vstar.train.weighting import MetaWeighting

            if meta_dataset is None or meta_collator is None:
                raise ValueError("sample_weighting meta needs the meta dataset and its collator.")
            self.meta = MetaWeighting(
                hidden_size=config.meta_hidden_size,
                learning_rate=config.meta_learning_rate,
                weight_decay=config.meta_weight_decay,
                seed=config.seed,
                device=self.args.device,
            )
            generator = torch.Generator().manual_seed(config.seed + self.args.process_index)
            self._meta_loader = torch.utils.data.DataLoader(
                meta_dataset,
                batch_size=config.meta_batch_size or config.per_device_train_batch_size,
                shuffle=True,
                generator=generator,
                collate_fn=meta_collator,
            )
            self._meta_iter = None
            self._meta_params: dict[str, torch.Tensor] | None = None

    def training_step(self, *args, **kwargs):
        if self.meta is None:
            return super().training_step(*args, **kwargs)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        # The look-ahead differentiates the training batch's gradient again, and only SDPA's math kernel has a second
        # derivative (the fused CPU, flash and memory-efficient kernels have none). The whole step uses it, so that
        # activation checkpointing recomputes the forward with the kernel that made it.
        with sdpa_kernel(SDPBackend.MATH):
            return super().training_step(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sample_ids = inputs.pop(SAMPLE_IDS, None)
        if self.meta is not None and model.training and not return_outputs:
            return self._meta_weighted_loss(model, inputs, sample_ids, num_items_in_batch)
        if self.token_loss is None or return_outputs:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        token_losses, mask, entropy, is_top1 = self._token_terms(
            model, inputs, self.token_loss, fused=not self.token_loss.needs_logits
        )
        self._record_metrics(inputs, mask, entropy, is_top1)
        return self._scaled(reduce_tokens(token_losses, mask, num_items_in_batch), num_items_in_batch)

    def _scaled(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        # As TRL and `Trainer.compute_loss`: `num_items_in_batch` counts the tokens of every process, and DDP
        # averages the gradients over the processes.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    @staticmethod
    def _token_terms(forward, inputs, loss: TokenLoss, fused: bool):
        """`(token_losses, mask, entropy, is_top1)` of a batch, each `(B, T - 1)`."""
        from vstar.train.losses import shifted_log_probs

        inputs = {**inputs, "use_cache": False}
        if fused:
            outputs = forward(**inputs, fused_lm_head=True)
            mask = outputs.label_mask
            return loss.token_losses(outputs.log_probs, mask), mask, outputs.entropy, outputs.is_top1
        labels = inputs.pop("labels")
        logits = forward(**inputs).logits
        log_probs, mask, smooth, entropy, is_top1 = shifted_log_probs(logits, labels, loss.needs_logits)
        return loss.token_losses(log_probs, mask, smooth), mask, entropy, is_top1

    def _record_metrics(self, inputs, mask, entropy, is_top1) -> None:
        """The metrics TRL's `compute_loss` logs (entropy, token accuracy, tokens seen)."""
        mode = "train" if self.model.training else "eval"
        num_valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
        entropy_sum = self.accelerator.gather_for_metrics(entropy.detach().sum()).sum()
        num_correct = self.accelerator.gather_for_metrics(is_top1.sum()).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train" and "attention_mask" in inputs:
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // getattr(self, "_tp_size", 1)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _meta_batch(self):
        try:
            batch = next(self._meta_iter)
        except (StopIteration, TypeError):
            self._meta_iter = iter(self._meta_loader)
            batch = next(self._meta_iter)
        return self._prepare_inputs(batch)

    def _meta_weighted_loss(self, model, inputs, sample_ids, num_items_in_batch):
        from vstar.train.losses import per_sample_mean

        unwrapped = self.accelerator.unwrap_model(model)
        if self._meta_params is None:
            # The trainable parameters only: the adapter's for LoRA, every weight for full finetuning.
            self._meta_params = {name: p for name, p in unwrapped.named_parameters() if p.requires_grad}
        train_loss, clean_loss = self.token_loss or TokenLoss(), TokenLoss()
        terms: dict[str, torch.Tensor] = {}

        def train_losses(forward, batch):
            token_losses, mask, entropy, is_top1 = self._token_terms(forward, batch, train_loss, fused=False)
            means, counts = per_sample_mean(token_losses, mask)
            terms.update(mask=mask, entropy=entropy, is_top1=is_top1, counts=counts)
            return means

        def meta_losses(forward, batch):
            token_losses, mask, _, _ = self._token_terms(forward, batch, clean_loss, fused=False)
            return per_sample_mean(token_losses, mask)[0]

        inner_lr = self.args.meta_lookahead_lr or self._get_learning_rate()
        step = self.meta.step(
            unwrapped,
            self._meta_params,
            train_losses,
            inputs,
            self._meta_batch(),
            inner_lr,
            forward=model,
            meta_loss_fn=meta_losses,
        )
        mask, counts = terms["mask"], terms["counts"]
        total = mask.sum() if num_items_in_batch is None else num_items_in_batch
        weighted = (step.weights * step.losses * counts).sum()
        loss = self._scaled(weighted / torch.as_tensor(total, device=weighted.device).clamp(min=1), num_items_in_batch)
        self._record_metrics(inputs, mask, terms["entropy"], terms["is_top1"])
        self._metrics["train"]["meta_loss"].append(step.meta_loss)
        self._metrics["train"]["sample_weight_min"].append(float(step.weights.min()))
        self._metrics["train"]["sample_weight_max"].append(float(step.weights.max()))
        losses = step.losses.detach().float().cpu().tolist()
        ids = sample_ids or [""] * len(losses)
        for sample_id, sample_loss, weight, raw in zip(
            ids, losses, step.weights.float().cpu().tolist(), step.raw_weights.float().cpu().tolist()
        ):
            self.sample_weight_records.append(
                {
                    "step": int(self.state.global_step),
                    "rank": int(self.args.process_index),
                    "id": sample_id,
                    "loss": sample_loss,
                    "weight": weight,
                    "raw_weight": raw,
                }
            )
        return loss


def trainer_class():
    """vstar's `SFTTrainer`: TRL's (looked up when called) with `RobustLossMixin`'s losses."""
    from trl import SFTTrainer

    return _with_robust_loss(SFTTrainer)


@functools.cache
def _with_robust_loss(base: type) -> type:
    return type("VStarSFTTrainer", (RobustLossMixin, base), {"__module__": __name__})


def write_sample_weights(trainer, output_dir: str | Path) -> Path | None:
    """Gather every process's per-sample weights and write them to `output_dir/sample_weights.parquet` (main).

    Columns: `step` (the optimizer step), `rank`, `id` (the row's id), `loss` (its mean token loss), `weight` (its
    weight in the step's loss, mean 1 over the micro-batch) and `raw_weight` (the weight net's output in (0, 1)).
    """
    from accelerate.utils import gather_object
    from datasets import Features, Value

    from vstar.io import write_parquet

    records = trainer.sample_weight_records
    if trainer.accelerator.num_processes > 1:
        records = gather_object(records)
    if not trainer.is_world_process_zero():
        return None
    features = Features(
        {
            "step": Value("int64"),
            "rank": Value("int32"),
            "id": Value("string"),
            "loss": Value("float32"),
            "weight": Value("float32"),
            "raw_weight": Value("float32"),
        }
    )
    path = Path(output_dir) / SAMPLE_WEIGHTS_FILE
    write_parquet(path, records, features)
    return path


def seed_meta_dataset(control_dataset: str | None) -> str:
    """`vstar cycle`'s default `meta_dataset`: the loop's seed set, which it names as `control_dataset`."""
    if not control_dataset:
        raise ConfigError(
            "sample_weighting meta needs a clean meta set: pass --meta_dataset, or --control_dataset with the seed set"
        )
    return control_dataset


def load_meta_rows(config: VStarSFTConfig):
    """The clean rows of `meta_dataset` (the seed set in a loop)."""
    from vstar.io import load_split

    if not config.meta_dataset:
        raise ConfigError(
            "sample_weighting meta needs --meta_dataset: a small clean instruction dataset (a loop's seed set)"
        )
    from vstar.configs import check_reference

    check_reference(config.meta_dataset, "meta_dataset", "clean instruction dataset")
    rows = load_split(config.meta_dataset, config.meta_dataset_split, config.meta_dataset_config)
    if len(rows) == 0:
        raise ConfigError(f"meta_dataset {config.meta_dataset} ({config.meta_dataset_split}) is empty")
    return rows


# A checkpoint's weights: safetensors or bin, whole or sharded (with an index), of an adapter or a model; FSDP's
# sharded state and DeepSpeed's own folder hold them too.
CHECKPOINT_WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
CHECKPOINT_WEIGHT_DIRS = ("pytorch_model_fsdp_*", "global_step*")
CHECKPOINT_OPTIMIZER = ("optimizer.pt", "optimizer.bin")
CHECKPOINT_OPTIMIZER_DIRS = ("optimizer_0", "global_step*")
TRAIN_SUMMARY = "train_summary.json"
REMOVING_PREFIX = ".removing-"


def _checkpoint_step(path: Path) -> int | None:
    step = path.name.removeprefix("checkpoint-")
    return int(step) if path.name.startswith("checkpoint-") and step.isdigit() and path.is_dir() else None


def _has_weights(checkpoint: Path) -> bool:
    for name in CHECKPOINT_WEIGHTS:
        path = checkpoint / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return True
        try:  # a sharded checkpoint is whole only with every shard its index names
            shards = set(json.loads(path.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if all((checkpoint / shard).is_file() for shard in shards):
            return True
    return any(d.is_dir() for pattern in CHECKPOINT_WEIGHT_DIRS for d in checkpoint.glob(pattern))


def incomplete_reason(checkpoint: str | Path, save_only_model: bool = False) -> str | None:
    """Why a `checkpoint-*` folder cannot be resumed from, or `None` when it is complete.

    The Trainer writes the weights, then the optimizer, scheduler and RNG states, and `trainer_state.json` last;
    removing a folder (its own rotation, or the cleanup after training) deletes files in any order. So a folder
    is complete only with a readable `trainer_state.json`, its weights and, unless the run saves only the model,
    its optimizer state.

    Args:
        checkpoint: the checkpoint folder.
        save_only_model: the run saves no optimizer state (`save_only_model: true`).
    """
    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    if not _has_weights(checkpoint):
        return "no weights"
    if not save_only_model and not (
        any((checkpoint / name).is_file() for name in CHECKPOINT_OPTIMIZER)
        or any(d.is_dir() for pattern in CHECKPOINT_OPTIMIZER_DIRS for d in checkpoint.glob(pattern))
    ):
        return "no optimizer state"
    return None


def remove_dir(path: str | Path) -> None:
    """Delete a folder so that a kill at any instant leaves it either whole under its name or gone from it.

    The folder is first renamed to a hidden `.removing-*` name (atomic), then deleted; what a kill during the
    deletion leaves is deleted by the next call for the same path (or by `remove_incomplete_checkpoints`).
    """
    path = Path(path)
    doomed = path.with_name(f"{REMOVING_PREFIX}{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)  # left by a kill during an earlier removal
    if not path.exists():
        return
    path.rename(doomed)
    shutil.rmtree(doomed)


def remove_incomplete_checkpoints(output_dir: str | Path, save_only_model: bool = False) -> list[str]:
    """Delete the `checkpoint-*` folders of `output_dir` that a kill left incomplete; returns their names.

    Args:
        output_dir: the training output directory.
        save_only_model: the run saves no optimizer state.
    """
    output_dir = Path(output_dir)
    removed = []
    for leftover in output_dir.glob(f"{REMOVING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for checkpoint in output_dir.glob("checkpoint-*"):
        if _checkpoint_step(checkpoint) is None:
            continue
        reason = incomplete_reason(checkpoint, save_only_model)
        if reason is not None:
            logger.warning("Removing %s (%s): the run was stopped while writing or deleting it.", checkpoint, reason)
            remove_dir(checkpoint)
            removed.append(checkpoint.name)
    return removed


def latest_checkpoint(
    output_dir: str | Path, resume_from_checkpoint: str | None, save_only_model: bool = False
) -> str | None:
    """The checkpoint to resume from: a given path, or with `last` the newest complete `checkpoint-*` in `output_dir`.

    Args:
        output_dir: the training output directory.
        resume_from_checkpoint: `last`, a checkpoint path (returned as it is), or `None`.
        save_only_model: the run saves no optimizer state (see `incomplete_reason`).
    """
    if resume_from_checkpoint != "last":
        return resume_from_checkpoint
    steps = {d: _checkpoint_step(d) for d in Path(output_dir).glob("checkpoint-*")}
    for checkpoint in sorted((d for d, step in steps.items() if step is not None), key=steps.get, reverse=True):
        reason = incomplete_reason(checkpoint, save_only_model)
        if reason is not None:
            logger.warning("Skipping %s (%s): the run stopped while writing or deleting it.", checkpoint, reason)
            continue
        return str(checkpoint)
    return None


def read_train_summary(output_dir: str | Path) -> dict[str, Any] | None:
    """The summary `train` writes last into `output_dir` (so the final model there is whole), or `None`."""
    try:
        summary = json.loads((Path(output_dir) / TRAIN_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def training_identity(config: VStarSFTConfig) -> dict[str, Any]:
    """What a finished model was trained from and how: a summary whose identity differs is another training's."""
    identity = {
        "model_name_or_path": config.model_name_or_path,
        "init_adapter": config.init_adapter,
        "dataset": config.dataset,
        "finetuning": config.finetuning,
        "learning_rate": config.learning_rate,
        "max_steps": config.max_steps,
        "num_train_epochs": config.num_train_epochs,
        "seed": config.seed,
    }
    # Only when set, so that the summaries of plain cross-entropy runs keep the identity they always had.
    loss = config.token_loss()
    if loss is not None:
        identity["token_loss"] = {"gamma": loss.gamma, "min_weight": loss.min_weight, "eps": loss.label_smoothing}
    if config.sample_weighting != "none":
        identity["sample_weighting"] = {"kind": config.sample_weighting, "meta_dataset": config.meta_dataset}
    return identity


def build_trainer(config: VStarSFTConfig, train_dataset=None):
    """vstar's `SFTTrainer` for `config`, with its model, processor, collator (and meta set), not yet trained.

    Args:
        config: the training settings.
        train_dataset: rows to train on; loaded from `config.dataset` when not given.
    """
    from transformers import AutoProcessor, set_seed

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    # Seed before anything draws random numbers: the LoRA weights are initialised when the adapter is created,
    # before the Trainer seeds, so without this two runs with one seed start from different adapters.
    set_seed(config.seed)
    processor = AutoProcessor.from_pretrained(config.model_name_or_path)
    dataset = train_dataset if train_dataset is not None else load_instruction_rows(config)
    model = load_model_for_training(config)
    collator = VideoSFTCollator(
        processor, num_frames=config.num_frames, fps=config.video_fps, cache_bytes=config.clip_cache_mb << 20
    )
    meta = {}
    if config.sample_weighting == "meta":
        meta = {"meta_dataset": load_meta_rows(config), "meta_collator": collator}
        collator = WithSampleIds(collator)
    return trainer_class()(
        model=model,
        args=config,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        **meta,
    )


def train(config: VStarSFTConfig, train_dataset=None) -> dict[str, Any]:
    """Finetune and save the adapter (or full model) with its processor to `config.output_dir`.

    With `sample_weighting: meta`, the per-sample weights are written to `output_dir/sample_weights.parquet`.

    Args:
        config: the training settings.
        train_dataset: rows to train on; loaded from `config.dataset` when not given.

    Returns:
        `{"output_dir", "train_loss", "global_step", "num_rows", "resumed_from", "trained"}` (also written to
        `output_dir/train_summary.json`, last).
    """
    from vstar.distributed import is_main_process

    trainer = build_trainer(config, train_dataset)
    dataset, processor = trainer.train_dataset, trainer.processing_class
    if config.resume_from_checkpoint == "last" and is_main_process():
        # Every process then picks the same newest complete checkpoint, whether or not this has finished.
        remove_incomplete_checkpoints(config.output_dir, config.save_only_model)
    checkpoint = latest_checkpoint(config.output_dir, config.resume_from_checkpoint, config.save_only_model)
    if checkpoint:
        logger.info("Resuming training from %s", Path(_final_name(config.output_dir)) / Path(checkpoint).name)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    output_dir = Path(config.output_dir)
    trainer.save_model(str(output_dir))  # every process calls it (ZeRO-3 / FSDP gather); the main one writes
    if trainer.meta is not None:
        write_sample_weights(trainer, output_dir)  # every process calls it (the records are gathered)
    summary = {
        "output_dir": str(output_dir),
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "num_rows": len(dataset),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "trained": training_identity(config),
    }
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        # Written last and atomically: its presence says the final model in `output_dir` is whole.
        tmp = output_dir / f".{TRAIN_SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(output_dir / TRAIN_SUMMARY)
    logger.info(
        "Trained %d steps on %d rows, loss %.4f -> %s",
        summary["global_step"],
        len(dataset),
        summary["train_loss"],
        _final_name(output_dir),
    )
    return summary


def _final_name(output_dir: str | Path) -> str:
    # The loop trains into `<dir>.partial` and renames it when the stage is done: say where the model will be.
    return str(output_dir).removesuffix(".partial")


def merge_adapter(
    base_model: str, adapter_dir: str | Path, output_dir: str | Path, processor: str | None = None
) -> Path:
    """Write the base model with the adapter merged into its weights (plus the processor) to `output_dir`.

    The weights keep the checkpoint's dtype (a bf16 7B model stays 15 GB, not 30 GB in fp32).

    Args:
        base_model: the base model (directory or Hub id).
        adapter_dir: the PEFT adapter directory.
        output_dir: where the merged model goes.
        processor: the processor saved with it (default: the adapter directory's).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    output_dir = Path(output_dir)
    base = AutoModelForImageTextToText.from_pretrained(base_model, dtype="auto")
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(output_dir)
    AutoProcessor.from_pretrained(processor or str(adapter_dir)).save_pretrained(output_dir)
    return output_dir
