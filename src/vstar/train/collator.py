"""A data collator for video SFT: decode clips, apply the chat template, mask everything but the answer.

TRL's `SFTTrainer` only recognises image columns, so video rows reach this collator untouched
(`remove_unused_columns=False`, `skip_prepare_dataset=True`). The loss covers the assistant's tokens only; they
are found as the tokens after the rendered prompt, which works with any chat template (no `{% generation %}`
markers needed). Each training text is the generation prompt exactly as inference renders it, followed by the
answer and its end-of-turn tokens, so the model is trained on the context it is later prompted with.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vstar.video import SampledClip, sample_frames

IGNORE_INDEX = -100


class ClipCache:
    """Sampled clips kept in memory by (video, window), least recently used evicted first.

    A training run visits every clip once per epoch; decoding it again each time is wasted work. The budget is in
    bytes because clips differ by orders of magnitude: 8 frames of 64x64 are 98 KB, 16 frames of 720p are 44 MB.
    Every DataLoader worker holds its own cache.

    Args:
        num_frames, fps: how clips are sampled.
        max_bytes: frame memory kept at most (0 disables the cache).
    """

    def __init__(self, num_frames: int | None = 8, fps: float | None = None, max_bytes: int = 1 << 30):
        self.num_frames, self.fps, self.max_bytes = num_frames, fps, max_bytes
        self._items: OrderedDict[Any, SampledClip] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def key(row: Mapping[str, Any]) -> Any:
        video = row["video"]
        ref = (video.get("path"), len(video.get("bytes") or b"")) if isinstance(video, Mapping) else video
        return row.get("id"), ref, row.get("start"), row.get("end")

    def get(self, row: Mapping[str, Any]) -> SampledClip:
        key = self.key(row)
        clip = self._items.get(key)
        if clip is None:
            clip = sample_frames(
                row["video"], num_frames=self.num_frames, fps=self.fps, start=row.get("start"), end=row.get("end")
            )
            if clip.frames.nbytes <= self.max_bytes:
                self._items[key] = clip
                self.bytes += clip.frames.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._items.popitem(last=False)[1].frames.nbytes
        else:
            self._items.move_to_end(key)
        return clip


def video_model_inputs(processor, texts: Sequence[str], clips: Sequence[SampledClip]) -> dict[str, torch.Tensor]:
    """Tokenise texts that each hold one video placeholder, with their clips and true frame rates."""
    return processor(
        text=list(texts),
        videos=[clip.frames for clip in clips],
        video_metadata=[clip.video_metadata() for clip in clips],
        # The frames are already sampled; video processors that sample by default (Qwen3-VL) would otherwise pick
        # indices of the whole window out of these few frames.
        do_sample_frames=False,
        padding=True,
        return_tensors="pt",
    )


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of typed parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


class VideoSFTCollator:
    """Turn instruction rows (`video`, `start`, `end`, `messages`) into a training batch with `labels`.

    Args:
        processor: the model's processor (tokenizer + video processor + chat template).
        num_frames: frames sampled per clip (or use `fps`).
        fps: frames per second sampled instead of a fixed count.
        cache_bytes: memory for decoded clips (per process: each DataLoader worker has its own).
    """

    def __init__(self, processor, num_frames: int | None = 8, fps: float | None = None, cache_bytes: int = 1 << 30):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.clips = ClipCache(num_frames=num_frames, fps=fps, max_bytes=cache_bytes)
        # Conversation -> (training text, supervised token count); a few hundred bytes each.
        self._rendered: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._rendered_max = 65536

    def _texts(self, messages: list[dict]) -> tuple[str, str]:
        """The training text and its supervised tail (the answer and the template's end-of-turn tokens)."""
        full = self.processor.apply_chat_template(messages, tokenize=False)
        prompt = self.processor.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        if full.startswith(prompt):
            return full, full[len(prompt) :]
        # Some templates render an assistant turn differently from their generation prompt (LLaVA-OneVision:
        # `assistant \n` + answer vs the prompt `assistant\n`). Train on the prompt inference will use, then the
        # answer as the conversation renders it, from where the answer starts.
        answer = message_text(messages[-1])
        diverges = next((i for i, (a, b) in enumerate(zip(full, prompt)) if a != b), min(len(full), len(prompt)))
        start = full.find(answer, diverges) if answer else -1
        if start < 0:
            raise ValueError(
                "The chat template neither renders the prompt as a prefix of the full conversation nor the answer "
                f"text verbatim after it; cannot tell which tokens to train on. Prompt: {prompt[-80:]!r}; "
                f"conversation: {full[-160:]!r}."
            )
        completion = full[start:]
        return prompt + completion, completion

    def _rendered_texts(self, examples: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int]]:
        """Each example's training text and the number of supervised tokens at its end.

        Rendered and counted once per distinct conversation: the chat template and tokenizer calls would otherwise
        cost as much as the video processor on every batch of every epoch.
        """
        keys = [json.dumps(example["messages"], sort_keys=True, default=str) for example in examples]
        found = {key: self._rendered[key] for key in keys if key in self._rendered}
        new = {key: self._texts(example["messages"]) for key, example in zip(keys, examples) if key not in found}
        if new:
            counts = self.tokenizer([completion for _, completion in new.values()], add_special_tokens=False)
            for (key, (text, _)), ids in zip(new.items(), counts["input_ids"]):
                found[key] = self._rendered[key] = (text, len(ids))
        for key in found:
            self._rendered.move_to_end(key)
        while len(self._rendered) > self._rendered_max:
            self._rendered.popitem(last=False)
        return [found[key][0] for key in keys], [found[key][1] for key in keys]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        texts, completion_lengths = self._rendered_texts(examples)
        batch = video_model_inputs(self.processor, texts, [self.clips.get(example) for example in examples])
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for i, n_completion in enumerate(completion_lengths):
            positions = batch["attention_mask"][i].nonzero().flatten()
            answer_positions = positions[len(positions) - n_completion :]
            labels[i, answer_positions] = batch["input_ids"][i, answer_positions]
        batch["labels"] = labels
        return batch
