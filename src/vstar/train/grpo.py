"""GRPO on video with TRL: the task verifiers as rewards, the video in every forward, the label hint inside RL.

```bash
vstar grpo --config recipes/demo/config_grpo_shapes_tiny.yaml --dataset runs/demo/source \
    --model_name_or_path runs/demo/warm-start --output_dir runs/grpo
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m vstar.cli grpo \
    --config recipes/Qwen2.5-VL-7B-Instruct/kinetics700/config_grpo.yaml
```

`VideoGRPOTrainer` subclasses TRL's `GRPOTrainer`. TRL 1.16 feeds the processor's video tensors to `generate` only
when it built them from images, and its log-probability forwards take image arguments only, so a video prompt
would be scored without its video. Here every row's clip is decoded by `vstar.video` (`ClipCache`), given to the
processor with its `VideoMetadata` (`vstar.train.collator.video_model_inputs`), and the video inputs
(`pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`, `mm_token_type_ids`) are kept per sample, so they
travel through TRL's shuffling and splitting of the generation batch and reach generation and every
log-probability forward: the policy (the loss), the old policy and the reference.

`hint_when_all_fail: true` brings Video-STaR's rationalization into RL: for a prompt whose whole group failed
the verifier, `hint_generations` of its rollouts are generated again with the label as a hint (the task's
rationalization prompt) and trained against the unhinted prompt (docs/grpo.md explains the importance ratios).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from vstar.errors import ConfigError

logger = logging.getLogger(__name__)

# Processor outputs that carry the video, kept per sample in the generation batch.
VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
# Special tokens that mark where vision inputs go (Qwen2/2.5/3-VL; others' are found the same way when present).
VISION_TOKENS = ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<video>", "<image>")
GRPO_SUMMARY = "train_summary.json"
REWARDS_FILE = "rewards.json"


@dataclass
class VStarGRPOConfig(GRPOConfig):
    """GRPO settings: everything `trl.GRPOConfig` has, plus the model, the labeled clips, the task and rewards."""

    model_name_or_path: str = field(default="", metadata={"help": "Base model (Hub id or local directory)."})
    dataset: str = field(
        default="", metadata={"help": "Labeled clips: a source dataset (directory or Hub id) with the task's labels."}
    )
    dataset_config: str = field(default="default", metadata={"help": "Config of the source dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision (branch, tag, sha)."})
    dataset_offset: int = field(default=0, metadata={"help": "Skip this many rows first (e.g. a seed set)."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Use at most this many rows."})
    task: str = field(default="action_recognition", metadata={"help": "Registered task (labels, prompts, verifier)."})
    task_options: str | None = field(
        default=None, metadata={"help": "Task options: a mapping in the recipe, or a JSON object on the command line."}
    )
    question_seed: int = field(default=0, metadata={"help": "Seed of each clip's question draw."})
    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Registered rewards (vstar.train.rewards), weighted by `reward_weights` in this order."},
    )
    length_limit: int = field(default=256, metadata={"help": "`length` reward: completion tokens before penalty."})
    hint_when_all_fail: bool = field(
        default=False,
        metadata={
            "help": "For a prompt whose whole group failed the verifier, regenerate `hint_generations` of its "
            "rollouts with the label as a hint and train them against the unhinted prompt."
        },
    )
    hint_generations: int | None = field(
        default=None, metadata={"help": "Hinted rollouts per all-failed group (default: half the group)."}
    )
    hint_min_weight: float = field(
        default=1.0,
        metadata={
            "help": "Hinted rollouts' importance weight min(1, pi(y|x)/pi(y|x,hint)) (per-token geometric mean) is "
            "clipped below at this value; 1 treats them as samples of the unhinted prompt (no correction)."
        },
    )
    finetuning: str = field(default="lora", metadata={"help": "`lora` or `full`."})
    lora_target: str = field(
        default="language",
        metadata={"help": "`language` (the language model's linears), `all` (also the vision tower), or a regex."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full and saved with the adapter."}
    )
    init_adapter: str | None = field(default=None, metadata={"help": "Continue training this adapter."})
    num_frames: int | None = field(default=8, metadata={"help": "Frames sampled per clip."})
    video_fps: float | None = field(default=None, metadata={"help": "Sample this many frames per second instead."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for CPU runs."})
    clip_cache_mb: int = field(default=1024, metadata={"help": "Memory for decoded clips kept between steps."})
    hub_repo: str | None = field(
        default=None, metadata={"help": "Publish the adapter to this model repo (versions, card, lineage)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (transformers 5)."}
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = False
        if not torch.cuda.is_available():
            self.use_cpu, self.bf16, self.fp16 = True, False, False
        self.remove_unused_columns = False  # the clip columns must reach the trainer
        if self.video_fps is not None:
            self.num_frames = None
        if isinstance(self.task_options, str):
            from vstar.tasks.base import parse_task_options

            self.task_options = parse_task_options(self.task_options)
        self._check()
        super().__post_init__()

    def _check(self) -> None:
        from vstar.configs import _check_choice, _check_range

        _check_choice(self, "finetuning", ("lora", "full"))
        _check_range(self, "hint_min_weight", 0, 1)
        _check_range(self, "dataset_offset", 0)
        _check_range(self, "dataset_limit", 1, optional=True)
        _check_range(self, "hint_generations", 1, self.num_generations, optional=True)
        if not self.rewards:
            raise ConfigError("rewards is empty: name at least one registered reward, e.g. rewards: [accuracy]")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ConfigError(
                f"reward_weights has {len(self.reward_weights)} values for {len(self.rewards)} rewards "
                f"({', '.join(self.rewards)}): give one weight per reward, in the same order"
            )
        if self.hint_when_all_fail and "accuracy" not in self.rewards:
            raise ConfigError("hint_when_all_fail needs the `accuracy` reward (it decides which groups failed)")
        if self.use_vllm:
            raise ConfigError("use_vllm: TRL's vLLM path sends images only; vstar grpo generates with transformers")

    @property
    def num_hint_generations(self) -> int:
        return self.hint_generations or max(1, self.num_generations // 2)


def grpo_rows(config: VStarGRPOConfig, task, source=None):
    """The GRPO dataset: each labeled clip with its question, direct and hinted prompts and label (JSON).

    Prompts come from `vstar.generate.base.build_requests`, the one place prompts are built, so RL asks exactly
    what the loop and evaluation ask.

    Args:
        config: the settings (source dataset, offset, limit, question seed).
        task: the task.
        source: source rows (a `datasets.Dataset`); loaded from `config.dataset` when not given.
    """
    from datasets import Dataset

    from vstar.generate.base import build_requests, chat_messages
    from vstar.io import load_split, rows_with_class_names

    if source is None:
        if not config.dataset:
            raise ConfigError("grpo needs --dataset: a source dataset of labeled clips (directory or Hub id)")
        source = load_split(config.dataset, config.dataset_split, config.dataset_config, config.dataset_revision)
    stop = len(source)
    if config.dataset_limit is not None:
        stop = min(stop, config.dataset_offset + config.dataset_limit)
    source = source.select(range(min(config.dataset_offset, stop), stop))
    if len(source) == 0:
        raise ConfigError(f"The dataset {config.dataset} has no rows after offset {config.dataset_offset}")
    rows = rows_with_class_names(source)
    direct = build_requests(task, rows, "direct", config.question_seed)
    hinted = build_requests(task, rows, "rationalized", config.question_seed)
    records = []
    for row, ask, hint in zip(rows, direct, hinted):
        records.append(
            {
                "id": str(row["id"]),
                "video": row["video"],
                "start": row.get("start"),
                "end": row.get("end"),
                "question": ask.question,
                "prompt": chat_messages(ask.prompt),
                "prompt_text": ask.prompt,
                "hint_text": hint.prompt,
                "label": json.dumps(task.label(row), sort_keys=True, default=str),
            }
        )
    return Dataset.from_list(records)


def _slice_video(video: dict[str, Any], start: int, end: int) -> dict[str, torch.Tensor]:
    """The model's video inputs for samples `start:end` of a per-sample video batch."""
    out = {}
    for key, value in video.items():
        part = value[start:end]
        out[key] = torch.cat(list(part)) if key == "pixel_values_videos" else part
    return out


def per_sample_video(batch) -> dict[str, Any]:
    """The processor's video outputs of a batch, one entry per sample (patches split by `video_grid_thw`)."""
    grid = batch["video_grid_thw"]
    video = {
        "pixel_values_videos": list(torch.split(batch["pixel_values_videos"], grid.prod(-1).tolist())),
        "video_grid_thw": grid,
    }
    if "second_per_grid_ts" in batch:
        video["second_per_grid_ts"] = torch.as_tensor(batch["second_per_grid_ts"], dtype=torch.float32)
    return video


class VideoGRPOTrainer(GRPOTrainer):
    """TRL's `GRPOTrainer` for video prompts (rows of `grpo_rows`).

    Generation, rewards (`_calculate_rewards`), the loss (`_compute_loss`) and the buffering of generation batches
    are TRL's; this class builds the video prompts, keeps the video per sample and passes it to every forward, and
    adds the label hint for all-failed groups. Tools, environments, custom rollouts and vLLM are not supported.

    Args:
        task: the task whose rationalization prompt gives the hint.
        *args, **kwargs: `GRPOTrainer`'s.
    """

    def __init__(self, *args, task=None, **kwargs):
        from vstar.train.collator import ClipCache

        super().__init__(*args, **kwargs)
        config = self.args
        self.task = task
        self.clips = ClipCache(config.num_frames, config.video_fps, config.clip_cache_mb << 20)
        self.processing_class.tokenizer.padding_side = "left"
        self._loss_video: dict[str, Any] | None = None
        # A sampled vision placeholder would read as one more video token in every later forward (the model then
        # fails: video features and tokens do not match), so rollouts may not contain them.
        tokenizer = self.processing_class.tokenizer
        placeholders = {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS if t in tokenizer.get_vocab()}
        suppressed = set(self.generation_config.suppress_tokens or [])
        self.generation_config.suppress_tokens = sorted(suppressed | placeholders)

    # --- prompts and generation

    def _video_prompts(self, inputs: list[dict[str, Any]], key: str):
        """Processor inputs of the rows' prompts (`key`: `prompt_text` or `hint_text`), left padded, on device.

        Rows repeat (a group is one prompt `num_generations` times): each distinct prompt is decoded and processed
        once, then repeated (`vstar.generate.hf.repeat_rows`).
        """
        from vstar.generate.base import chat_prompt
        from vstar.generate.hf import repeat_rows
        from vstar.train.collator import video_model_inputs

        index: dict[tuple, int] = {}
        distinct, owners = [], []
        for row in inputs:
            ident = (row["id"], row.get("start"), row.get("end"), row[key])
            if ident not in index:
                index[ident] = len(distinct)
                distinct.append(row)
            owners.append(index[ident])
        texts = [chat_prompt(self.processing_class, row[key]) for row in distinct]
        batch = video_model_inputs(self.processing_class, texts, [self.clips.get(row) for row in distinct])
        if "mm_token_type_ids" not in batch:
            mm = torch.zeros_like(batch["input_ids"])
            mm[batch["input_ids"] == self._video_pad_token_id] = 2
            batch["mm_token_type_ids"] = mm
        if len(distinct) < len(inputs):
            batch = repeat_rows(batch, owners, [True] * len(distinct))
        return batch.to(self.accelerator.device)

    def _sample(self, batch) -> list[list[int]]:
        """Completions of a prompt batch (one per row), sampled by TRL's generation path with the video."""
        keep = batch["attention_mask"].bool()
        prompt_ids = [ids[m].tolist() for ids, m in zip(batch["input_ids"], keep)]
        fields = {k: batch[k] for k in ("pixel_values_videos", "video_grid_thw") if k in batch}
        if "second_per_grid_ts" in batch:
            fields["second_per_grid_ts"] = torch.as_tensor(batch["second_per_grid_ts"], dtype=torch.float32)
        # A per-token field as lists: TRL left-pads it exactly like the prompt ids.
        fields["mm_token_type_ids"] = [t[m].tolist() for t, m in zip(batch["mm_token_type_ids"], keep)]
        completion_ids, _ = self._generate_single_turn(prompt_ids, None, fields, self.num_generations)
        return completion_ids

    def _decode(self, completion_ids: list[list[int]]) -> list[list[dict[str, str]]]:
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        return [[{"role": "assistant", "content": text}] for text in texts]

    # --- log-probabilities with the video

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        video: dict[str, Any] | None = None,
        **image_inputs,
    ):
        """TRL's per-token log-probabilities, computed with each sample's video.

        `video` is a per-sample video batch; without it, the one `_compute_loss` is scoring (TRL's loss calls this
        with image arguments only). A batch without video goes to TRL's own method.
        """
        video = video if video is not None else self._loss_video
        if video is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **image_inputs,
            )  # fmt: skip
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            model_inputs = {"input_ids": ids, "attention_mask": mask, **_slice_video(video, start, end)}
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            with self.accelerator.autocast():
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(outputs.aux_loss)
        return (
            torch.cat(logps),
            torch.cat(entropies) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )

    def _compute_loss(self, model, inputs):
        # TRL's loss, with the policy forward scored on each sample's video.
        self._loss_video = {k: inputs[k] for k in VIDEO_KEYS if k in inputs}
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_video = None

    def completion_logps(self, model, prompt_batch, completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """Per-token log-probabilities of completions after a prompt batch (with its video), without gradient.

        Args:
            model: the model to score with.
            prompt_batch: processor inputs of the prompts (left padded).
            completion_ids, completion_mask: the completions, right padded.
        """
        video = per_sample_video(prompt_batch)
        video["mm_token_type_ids"] = torch.cat(
            [prompt_batch["mm_token_type_ids"], prompt_batch["mm_token_type_ids"].new_zeros(completion_ids.shape)], 1
        )
        ids = torch.cat([prompt_batch["input_ids"], completion_ids], 1)
        mask = torch.cat([prompt_batch["attention_mask"], completion_mask], 1)
        with torch.no_grad():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model, ids, mask, completion_ids.size(1), self.args.per_device_train_batch_size, video=video
            )
        return logps

    # --- the generation batch

    def _hint_rows(self, rewards_per_func: torch.Tensor, group: int) -> torch.Tensor:
        """Which rows (of the gathered batch) are regenerated with the hint: the last `num_hint_generations`
        rollouts of each group whose every rollout failed the verifier (accuracy below 1)."""
        accuracy = rewards_per_func[:, self.reward_func_names.index("accuracy")]
        failed = (accuracy < 1.0).view(-1, group).all(dim=1)
        position = torch.arange(group, device=accuracy.device)
        chosen = position >= group - self.args.num_hint_generations
        return (failed.unsqueeze(1) & chosen.unsqueeze(0)).flatten()

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        from accelerate.utils import gather, gather_object
        from trl.trainer.utils import nanstd, pad, use_adapter

        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        prompts = [row["prompt"] for row in inputs]
        prompt_batch = self._video_prompts(inputs, "prompt_text")
        completion_ids_list = self._sample(prompt_batch)
        completions = self._decode(completion_ids_list)
        rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)

        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        hinted = torch.zeros(len(inputs), dtype=torch.bool, device=device)
        hint_batch = None
        if self.args.hint_when_all_fail and mode == "train":
            replace = self._hint_rows(rewards_per_func, group)
            hinted = replace[local]
            rows = hinted.nonzero().flatten().tolist()
            if rows:
                hint_batch = self._video_prompts([inputs[i] for i in rows], "hint_text")
                for i, ids in zip(rows, self._sample(hint_batch)):
                    completion_ids_list[i] = ids
                completions = self._decode(completion_ids_list)
            if replace.any():  # the same on every process: the rewards' gather stays in step
                rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            hinted_rewards = rewards_per_func[replace, self.reward_func_names.index("accuracy")]
            self._metrics[mode]["hint/groups_all_failed"].append(replace.view(-1, group).any(1).float().mean().item())
            self._metrics[mode]["hint/rollouts"].append(float(replace.sum().item()))
            self._metrics[mode]["hint/accuracy"].append(hinted_rewards.mean().item() if replace.any() else 0.0)

        prompt_ids, prompt_mask = prompt_batch["input_ids"], prompt_batch["attention_mask"]
        completion_ids = pad(
            [torch.tensor(ids, dtype=torch.long) for ids in completion_ids_list],
            padding_value=self._tokenizer.pad_token_id,
        ).to(device)
        completion_mask = pad([torch.ones(len(ids), dtype=torch.long) for ids in completion_ids_list]).to(device)
        eos_and_pad = [*self.eos_token_ids, self._tokenizer.pad_token_id]
        is_truncated = torch.tensor(
            [not ids or ids[-1] not in eos_and_pad for ids in completion_ids_list], device=device
        )
        if self.mask_truncated_completions:
            completion_mask = completion_mask * (~is_truncated).unsqueeze(1).int()
        num_items_in_batch = self.accelerator.gather(completion_mask.sum()).sum()

        video = per_sample_video(prompt_batch)
        mm = prompt_batch["mm_token_type_ids"]
        video["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(completion_ids.shape)], dim=1)
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        mask = torch.cat([prompt_mask, completion_mask], dim=1)
        keep = completion_ids.size(1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size

        from trl.models.utils import disable_gradient_checkpointing

        hint_weights = None
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            old_per_token_logps = None
            if self.args.gradient_accumulation_steps % (self.args.steps_per_generation * self.num_iterations) != 0:
                old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, keep, batch_size, video=video
                )
            if hint_batch is not None and self.args.hint_min_weight < 1.0:
                hint_weights = self._hint_weights(hint_batch, completion_ids[hinted], completion_mask[hinted], ids,
                                                  mask, keep, video, hinted)  # fmt: skip
            ref_per_token_logps = None
            if self.beta != 0.0:
                if self.ref_model is not None:
                    ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.ref_model, ids, mask, keep, batch_size, video=video
                    )
                else:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
                            self.model, ids, mask, keep, batch_size, video=video
                        )

        weights = self.reward_weights.to(device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        grouped = rewards.view(-1, group)
        mean = grouped.nanmean(dim=1).repeat_interleave(group)
        if self.scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards)
        else:
            std = nanstd(grouped, dim=1).repeat_interleave(group) if group > 1 else torch.zeros_like(rewards)
        advantages = rewards - mean
        if self.scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
        advantages = torch.nan_to_num(advantages, nan=0.0)
        all_advantages = advantages.clone()
        advantages = advantages[local]
        if hint_weights is not None:
            advantages = advantages.clone()
            advantages[hinted] = advantages[hinted] * hint_weights
            self._metrics[mode]["hint/importance_weight"].append(hint_weights.mean().item())

        lengths = self.accelerator.gather(torch.tensor([len(c) for c in completion_ids_list], device=device))
        if mode == "train":
            prompt_tokens = self.accelerator.gather(prompt_mask.sum()).sum()
            self.state.num_input_tokens_seen += (prompt_tokens + lengths.sum()).item()
        self._metrics[mode]["num_tokens"] = [self.state.num_input_tokens_seen]
        self._metrics[mode]["completions/mean_length"].append(lengths.float().mean().item())
        self._metrics[mode]["completions/clipped_ratio"].append(gather(is_truncated).float().mean().item())
        for i, name in enumerate(self.reward_func_names):
            self._metrics[mode][f"rewards/{name}/mean"].append(torch.nanmean(rewards_per_func[:, i]).item())
            self._metrics[mode][f"rewards/{name}/std"].append(nanstd(rewards_per_func[:, i]).item())
        self._metrics[mode]["reward"].append(torch.nanmean(rewards).item())
        self._metrics[mode]["reward_std"].append(nanstd(rewards).item())
        zero_std = torch.isclose(std, torch.zeros_like(std)).float().mean().item()
        self._metrics[mode]["frac_reward_zero_std"].append(zero_std)
        self._logs["prompt"].extend(gather_object(prompts))
        self._logs["completion"].extend(gather_object(completions))
        for i, name in enumerate(self.reward_func_names):
            self._logs["rewards"][name].extend(rewards_per_func[:, i].tolist())
        self._logs["advantages"].extend(all_advantages.tolist())
        for column in sorted(set(gather_object(list(self._pending_extra_logs)))):
            values = self._pending_extra_logs.get(column, [None] * len(prompts))
            self._logs["extra"][column].extend(gather_object(values))
        self._pending_extra_logs.clear()
        self._pending_metrics.clear()

        output = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": advantages,
            "num_items_in_batch": num_items_in_batch,
            **video,
        }
        if old_per_token_logps is not None:
            output["old_per_token_logps"] = old_per_token_logps
        if ref_per_token_logps is not None:
            output["ref_per_token_logps"] = ref_per_token_logps
        return output

    def _hint_weights(self, hint_batch, completion_ids, completion_mask, ids, mask, keep, video, hinted):
        """min(1, pi(y|x) / pi(y|x, hint)) per hinted rollout, as the geometric mean over its tokens, clipped below
        at `hint_min_weight`; computed with the current (old) policy."""
        rows = hinted.nonzero().flatten()
        unhinted_video = {
            k: v[rows] if torch.is_tensor(v) else [v[i] for i in rows.tolist()] for k, v in video.items()
        }
        unhinted, _, _ = self._get_per_token_logps_and_entropies(
            self.model, ids[rows], mask[rows], keep, self.args.per_device_train_batch_size, video=unhinted_video
        )
        with_hint = self.completion_logps(self.model, hint_batch, completion_ids, completion_mask)
        tokens = completion_mask.sum(1).clamp(min=1)
        log_ratio = ((unhinted - with_hint) * completion_mask).sum(1) / tokens
        return log_ratio.exp().clamp(min=self.args.hint_min_weight, max=1.0)


def load_policy(config: VStarGRPOConfig):
    """The model to train: the base model with a new or continued LoRA adapter (`finetuning: full`: the whole
    model), loaded as `vstar train` loads it."""
    from vstar.train.sft import load_model_for_training

    if not config.model_name_or_path:
        raise ConfigError("grpo needs --model_name_or_path: the model to train (Hub id or local directory)")
    return load_model_for_training(config)


def build_grpo_trainer(config: VStarGRPOConfig, train_dataset=None, reward_funcs=None) -> VideoGRPOTrainer:
    """The video GRPO trainer for `config`, with its model, processor, task, rewards and rows, not yet trained.

    Args:
        config: the settings.
        train_dataset: GRPO rows (`grpo_rows`); built from `config.dataset` when not given.
        reward_funcs: reward functions to use instead of `config.rewards`.
    """
    from transformers import AutoProcessor, set_seed

    from vstar.tasks.base import load_task
    from vstar.train.rewards import build_rewards

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    set_seed(config.seed)  # before the adapter is created: its initial weights follow the seed
    task = load_task(config.task, config.task_options)
    rows = train_dataset if train_dataset is not None else grpo_rows(config, task)
    processor = AutoProcessor.from_pretrained(config.model_name_or_path)
    model = load_policy(config)
    rewards = reward_funcs if reward_funcs is not None else build_rewards(config.rewards, task, config)
    return VideoGRPOTrainer(
        model=model, reward_funcs=rewards, args=config, train_dataset=rows, processing_class=processor, task=task
    )


def train_grpo(config: VStarGRPOConfig, train_dataset=None, reward_funcs=None) -> dict[str, Any]:
    """Train with GRPO and save the adapter (or model), processor, rewards and summary to `config.output_dir`.

    Resumes from the newest complete checkpoint with `resume_from_checkpoint: last` (a kill mid-save leaves an
    incomplete one, which is removed first). With `hub_repo`, the adapter is published like a cycle's model.

    Args:
        config: the settings.
        train_dataset: GRPO rows (`grpo_rows`); built from `config.dataset` when not given.
        reward_funcs: reward functions to use instead of `config.rewards`.

    Returns:
        `{"output_dir", "global_step", "train_loss", "num_rows", "resumed_from", "rewards", "log_history"}`
        (without the log history also in `output_dir/train_summary.json`, written last).
    """
    from vstar.distributed import is_main_process
    from vstar.train.rewards import describe_rewards
    from vstar.train.sft import latest_checkpoint, remove_incomplete_checkpoints

    trainer = build_grpo_trainer(config, train_dataset, reward_funcs)
    if config.resume_from_checkpoint == "last" and is_main_process():
        remove_incomplete_checkpoints(config.output_dir, config.save_only_model)
    checkpoint = latest_checkpoint(config.output_dir, config.resume_from_checkpoint, config.save_only_model)
    if checkpoint:
        logger.info("Resuming GRPO from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    output_dir = Path(config.output_dir)
    trainer.save_model(str(output_dir))
    rewards = describe_rewards(trainer.reward_func_names, trainer.reward_weights.tolist())
    summary = {
        "output_dir": str(output_dir),
        "global_step": int(result.global_step),
        "train_loss": float(result.training_loss),
        "num_rows": len(trainer.train_dataset),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "rewards": rewards,
        "hint_when_all_fail": config.hint_when_all_fail,
        "trained": {
            "method": "grpo",
            "model_name_or_path": config.model_name_or_path,
            "init_adapter": config.init_adapter,
            "dataset": config.dataset,
            "task": config.task,
            "learning_rate": config.learning_rate,
            "max_steps": config.max_steps,
            "num_generations": config.num_generations,
            "beta": config.beta,
            "seed": config.seed,
        },
    }
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(output_dir)
        (output_dir / REWARDS_FILE).write_text(json.dumps(rewards, indent=2))
        tmp = output_dir / f".{GRPO_SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(output_dir / GRPO_SUMMARY)
    logger.info("GRPO: %d steps on %d prompts -> %s", summary["global_step"], summary["num_rows"], output_dir)
    if trainer.is_world_process_zero():
        write_grpo_card(config, summary)
        if config.hub_repo:
            summary["hub"] = publish_grpo(config, summary)
    return {**summary, "log_history": list(trainer.state.log_history)}


def write_grpo_card(config: VStarGRPOConfig, summary: dict[str, Any], repo_id: str | None = None) -> Path:
    """Write `output_dir/README.md`: how to load the adapter, the reward definitions, the settings, the lineage.

    Args:
        config: the run's settings.
        summary: what `train_grpo` returned.
        repo_id: the model repo the card is published to (for the usage snippet).
    """
    import yaml

    from vstar.cards import DEFAULT_LICENSE, _lineage_context, markdown_table, write_card
    from vstar.configs import config_dict
    from vstar.lineage import Lineage, dataset_revision, model_revision, pinned, vstar_version

    output_dir = Path(config.output_dir)
    settings = {k: summary["trained"][k] for k in ("learning_rate", "num_generations", "beta", "seed")}
    settings.update(
        steps=summary["global_step"], finetuning=config.finetuning, hint_when_all_fail=config.hint_when_all_fail
    )
    lineage = Lineage(
        base_model=config.model_name_or_path,
        base_revision=model_revision(config.model_name_or_path),
        source_dataset=config.dataset,
        source_revision=config.dataset_revision,
        source_commit=dataset_revision(config.dataset, config.dataset_revision),
        vstar_version=vstar_version(),
        config=yaml.safe_dump(config_dict(config), sort_keys=True),
        adapter=str(repo_id or output_dir),
        adapter_revision=model_revision(output_dir),
        adapter_kind="adapter" if config.finetuning == "lora" else "finetuned model",
        init_adapter=pinned(config.init_adapter, model_revision(config.init_adapter)) if config.init_adapter else None,
    )
    metadata = {
        "license": DEFAULT_LICENSE,
        "base_model": config.model_name_or_path,
        "library_name": "peft" if config.finetuning == "lora" else "transformers",
        "tags": ["vstar", "grpo", "video-text-to-text"],
    }
    return write_card(
        output_dir / "README.md",
        "grpo_model.md.j2",
        metadata,
        title=f"{repo_id or output_dir.name}: GRPO on {config.task}",
        kind="A LoRA adapter" if config.finetuning == "lora" else "A model",
        base_id=config.model_name_or_path,
        dataset=config.dataset,
        task=config.task,
        hint=config.hint_when_all_fail,
        lora=config.finetuning == "lora",
        repo_id=repo_id or str(output_dir),
        revision=None,
        rewards_table=markdown_table(summary["rewards"]),
        settings_table=markdown_table([{"setting": k, "value": v} for k, v in settings.items()]),
        citation=None,
        **_lineage_context(lineage),
    )


def publish_grpo(config: VStarGRPOConfig, summary: dict[str, Any]) -> dict[str, str]:
    """Push the trained adapter with its card to `config.hub_repo`, tagged `grpo-step-<N>` (a version per run).

    Args:
        config: the run's settings (`hub_repo`).
        summary: what `train_grpo` returned.

    Returns:
        `{"repo", "revision", "tag"}`.
    """
    from vstar.hub import HubPublisher

    write_grpo_card(config, summary, config.hub_repo)
    publisher = HubPublisher()
    tag = f"grpo-step-{summary['global_step']}"
    revision = publisher.push_model_dir(config.output_dir, config.hub_repo, f"GRPO adapter ({tag})")
    publisher.tag(config.hub_repo, "model", tag, revision, f"GRPO on {config.task}, {summary['global_step']} steps")
    logger.info("Published %s@%s (%s)", config.hub_repo, revision[:8], tag)
    return {"repo": config.hub_repo, "revision": revision, "tag": tag}


def main(argv: list[str] | None = None) -> None:
    """`vstar grpo --config RECIPE.yaml [--field value ...]`."""
    from vstar.configs import parse_configs

    (config,) = parse_configs((VStarGRPOConfig,), argv)
    train_grpo(config)
