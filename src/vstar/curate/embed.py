"""Frame embedders for scene stitching: L2-normalised vectors whose distances say whether two frames show one scene.

Panda-70M compares ImageBind embeddings of the frames around each cut; its thresholds (merge 0.6, transition 1.0,
static 0.15) are distances between L2-normalised vectors. Two embedders are here:

- `pixels` (the default, no download): a joint RGB colour histogram (4 x 4 x 4 soft bins, square-rooted: the Hellinger
  embedding, unit length) weighted 0.8, next to an 8 x 8 grey thumbnail with its mean removed, on an absolute
  scale (full contrast ~ 2), weighted 0.6; the whole vector unit-normalised. Frames of one shot sit within ~0.3-0.6
  of each other when something moves (the thumbnail moves with it) and under 0.05 when nothing does; frames of
  shots with other colours are 1-1.4 apart, so the Panda thresholds keep their meaning for plain footage. It knows
  nothing of semantics: two shots of one event filmed in different colours are not merged.
- any transformers image model by local path or Hub id already in the cache: CLIP / SigLIP (`get_image_features`)
  or any vision backbone (its pooled output, else the mean of its last hidden state).

```python
from vstar.curate.embed import get_embedder
embed = get_embedder("pixels")
vectors = embed([frame_a, frame_b])  # (2, D) float32, unit rows
```
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

PIXELS = "pixels"
_BINS = 4
_THUMB = 8
# Colour decides between shots (different colours are ~1 apart); layout only tells motion from stillness, and at
# this weight a moving object cannot alone push two frames of one shot past the transition threshold.
_COLOUR_WEIGHT, _LAYOUT_WEIGHT = 0.8, 0.6


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


class PixelEmbedder:
    """The default embedder: colour histogram plus a grey layout thumbnail (see the module docstring)."""

    name = PIXELS

    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._one(frame) for frame in frames]).astype(np.float32)

    @staticmethod
    def _one(frame: np.ndarray) -> np.ndarray:
        small = _resize(frame, 32, 32).reshape(-1, 3).astype(np.float64)
        # Soft bins (each value shared between the two nearest bin centres): a value near a bin edge that encoder
        # noise moves across changes the histogram a little, not by a whole pixel.
        width = 256 / _BINS
        centres = (np.arange(_BINS) + 0.5) * width
        weights = np.clip(1 - np.abs(small[:, :, None] - centres) / width, 0, None)  # (pixels, 3, bins)
        weights /= weights.sum(axis=2, keepdims=True)
        joint = np.einsum("pi,pj,pk->ijk", weights[:, 0], weights[:, 1], weights[:, 2]).ravel()
        histogram = np.sqrt(joint / len(small))
        grey = _resize(frame, _THUMB, _THUMB).astype(np.float64).mean(axis=2).ravel()
        # On an absolute scale (full contrast ~ 1), not unit length: a flat frame's encoder noise stays ~0.
        layout = (grey - grey.mean()) / (64 * _THUMB)
        vector = np.concatenate([_COLOUR_WEIGHT * histogram, _LAYOUT_WEIGHT * layout])
        return vector / np.linalg.norm(vector)


class TransformersEmbedder:
    """Image features of a transformers model (CLIP, SigLIP or any vision backbone), L2-normalised.

    Args:
        model: a local directory or a Hub id already in the cache (nothing is downloaded in tests).
        batch_size: frames per forward pass.
        device: where the model runs.
    """

    def __init__(self, model: str, batch_size: int = 16, device: str = "cpu"):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.name = model
        self.batch_size = batch_size
        self.processor = AutoImageProcessor.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).eval().to(device)
        self.device = device
        self.torch = torch

    def _features(self, pixel_values):
        model = self.model
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, self.torch.Tensor) else out.pooler_output
        out = model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled.reshape(pooled.shape[0], -1)

    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        vectors = []
        with self.torch.inference_mode():
            for at in range(0, len(frames), self.batch_size):
                images = [np.ascontiguousarray(frame) for frame in frames[at : at + self.batch_size]]
                inputs = self.processor(images=images, return_tensors="pt")
                features = self._features(inputs["pixel_values"].to(self.device)).float()
                vectors.append(self.torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
        return np.concatenate(vectors).astype(np.float32)


def get_embedder(name: str = PIXELS, device: str = "cpu"):
    """The frame embedder named `name`: `pixels`, or a transformers image model's path or Hub id.

    Args:
        name: `pixels` or a model.
        device: where a model runs (`cpu`, `cuda`).
    """
    if name == PIXELS:
        return PixelEmbedder()
    return TransformersEmbedder(name, device=device)
