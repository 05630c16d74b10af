"""Video-text scorers: a CLIP, SigLIP or X-CLIP model of transformers and its processor, as one cosine function.

A clip is a few frames sampled in its `[start, end]` window (`vstar.video.sample_frames`). CLIP and SigLIP embed
each frame, L2-normalise, average over the clip and normalise again (Panda-70M's zero-shot selector pools frame
embeddings the same way); X-CLIP embeds the frames as a video with its own cross-frame encoder and conditions each
text on the video (its prompt generator), as its forward pass does. `VideoTextScorer.cosine` returns the
(videos x texts) cosine matrix, differentiable, for `vstar select` (scoring) and `vstar train-scorer` (training).

```python
from vstar.scoring import VideoTextScorer, clip_frames
scorer = VideoTextScorer.from_pretrained("runs/scorer")
frames = clip_frames("clip.mp4", start=1.0, end=4.0, num_frames=scorer.num_frames)
scorer.score([frames], [["a red square moving", "a blue square moving"]])  # [[0.31, -0.02]]
```
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vstar.errors import InputError

logger = logging.getLogger(__name__)

KINDS = ("clip", "siglip", "xclip")
DEFAULT_NUM_FRAMES = 8
# Settings of the scorer that are not part of the transformers config, saved beside it.
SCORER_FILE = "vstar_scorer.json"


def clip_frames(video: Any, start: float | None, end: float | None, num_frames: int) -> np.ndarray:
    """`num_frames` uniformly spaced RGB frames `(T, H, W, 3)` of a clip's `[start, end]` window.

    Args:
        video: a path, bytes or a `datasets.Video(decode=False)` entry (a callable returning one is read first).
        start: window start in seconds (None: the first frame).
        end: window end in seconds (None: the last frame).
        num_frames: frames to sample.
    """
    from vstar.video import sample_frames

    if callable(video):
        video = video()
    return sample_frames(video, num_frames=num_frames, start=start, end=end).frames


class VideoTextScorer:
    """A video-text retrieval model and its processor, scoring clips against texts by cosine similarity.

    Args:
        model: a `CLIPModel`, `SiglipModel` or `XCLIPModel`.
        processor: its processor (image processor + tokenizer).
        num_frames: frames sampled per clip.
    """

    def __init__(self, model, processor, num_frames: int = DEFAULT_NUM_FRAMES):
        kind = model.config.model_type
        if kind not in KINDS:
            raise InputError(
                f"The scorer is a {kind!r} model; `vstar select` and `vstar train-scorer` take CLIP, SigLIP or "
                "X-CLIP models (model_type clip, siglip or xclip)."
            )
        self.model = model
        self.processor = processor
        self.kind = kind
        self.num_frames = num_frames
        text_config = model.config.text_config
        self.max_text_length = int(getattr(text_config, "max_position_embeddings", 64))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        num_frames: int | None = None,
        device: str | None = None,
        attn_implementation: str | None = None,
    ):
        """Load a saved scorer (a folder or Hub id with a CLIP/SigLIP/X-CLIP model and its processor).

        Args:
            path: the model folder or Hub id.
            num_frames: frames per clip (default: what the scorer was trained with, else 8).
            device: where the model runs (default: CPU).
            attn_implementation: `eager` where second derivatives are needed (meta-weighting's look-ahead).
        """
        from transformers import AutoModel, AutoProcessor

        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModel.from_pretrained(str(path), **kwargs)
        processor = AutoProcessor.from_pretrained(str(path))
        saved = Path(path) / SCORER_FILE
        settings = json.loads(saved.read_text()) if saved.is_file() else {}
        scorer = cls(model, processor, num_frames or int(settings.get("num_frames", DEFAULT_NUM_FRAMES)))
        model.to(device or "cpu").eval()
        return scorer

    def save_pretrained(self, path: str | Path, **extra: Any) -> Path:
        """Write the model, its processor and the scorer's settings (`num_frames`, plus `extra`) to `path`."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        (path / SCORER_FILE).write_text(json.dumps({"num_frames": self.num_frames, **extra}, indent=2))
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """Processed frames `(N, T, C, H, W)` of `N` clips of `T` frames each."""
        counts = {len(c) for c in clips}
        if len(counts) != 1:
            raise ValueError(f"every clip needs the same number of frames, got {sorted(counts)}")
        flat = [frame for clip in clips for frame in clip]
        pixels = self.processor.image_processor(images=flat, return_tensors="pt")["pixel_values"]
        return pixels.view(len(clips), counts.pop(), *pixels.shape[1:]).to(self.device)

    def text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids (and attention mask) of `texts`, truncated to the text tower's length."""
        # SigLIP was trained on texts padded to the full length and pools the last position: pad the same way.
        padding = "max_length" if self.kind == "siglip" else True
        encoded = self.processor.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        keep = ("input_ids",) if self.kind == "siglip" else ("input_ids", "attention_mask")
        return {k: v.to(self.device) for k, v in encoded.items() if k in keep}

    def video_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised clip embeddings `(N, D)` of CLIP/SigLIP: frame embeddings normalised, averaged, normalised."""
        n, t = pixel_values.shape[:2]
        frames = _pooled(self.model.get_image_features(pixel_values=pixel_values.flatten(0, 1)))
        frames = torch.nn.functional.normalize(frames, dim=-1).view(n, t, -1)
        return torch.nn.functional.normalize(frames.mean(dim=1), dim=-1)

    def text_embeddings(self, text_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised text embeddings `(M, D)`."""
        return torch.nn.functional.normalize(_pooled(self.model.get_text_features(**text_inputs)), dim=-1)

    def cosine(self, pixel_values: torch.Tensor, text_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cosine similarities `(N videos, M texts)`, in [-1, 1], with gradients when enabled."""
        if self.kind == "xclip":
            out = self.model(pixel_values=pixel_values, **text_inputs)
            # X-CLIP's logits are its own scale times the cosine of video and video-conditioned text embeddings.
            return out.logits_per_video / self.model.logit_scale.exp()
        return self.video_embeddings(pixel_values) @ self.text_embeddings(text_inputs).T

    @torch.no_grad()
    def score(self, clips: Sequence[np.ndarray], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """Each clip's cosine with each of its own candidate texts.

        Args:
            clips: frames `(T, H, W, 3)` per clip.
            candidates: per clip, its candidate texts (any number, possibly none).

        Returns:
            Per clip, one score per candidate, in order.
        """
        if not clips:
            return []
        texts = [text for group in candidates for text in group]
        if not texts:
            return [[] for _ in clips]
        matrix = self.cosine(self.pixel_values(clips), self.text_inputs(texts)).float().cpu()
        scores, at = [], 0
        for i, group in enumerate(candidates):
            scores.append([float(v) for v in matrix[i, at : at + len(group)]])
            at += len(group)
        return scores


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns the projected embeddings as `pooler_output` of a model output; older versions a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output
