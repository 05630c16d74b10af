"""Tiny models load through the Auto classes, run a forward pass on real video frames and generate."""

import pytest
import torch

from vstar.testing.tiny_models import build_tokenizer
from vstar.train.collator import video_model_inputs
from vstar.video import sample_frames

# Video tokens per 8-frame 64 x 64 clip. Qwen2/2.5-VL: resized to 56 x 56, 4 temporal x 4 x 4 patches of 14 px,
# merged 2 x 2 -> 16. Qwen3-VL: 64 x 64 kept, 4 temporal x 4 x 4 patches of 16 px, merged 2 x 2 -> 16, with a
# timestamp between temporal patches. LLaVA-OneVision: every frame is 4 x 4 patches of 16 px, pooled to 2 x 2,
# plus one newline token per video -> 8 * 4 + 1 = 33.
VIDEO_TOKENS_PER_CLIP = {"qwen2_5_vl": 16, "qwen2_vl": 16, "qwen3_vl": 16, "llava_onevision": 33}


@pytest.mark.parametrize("arch", list(VIDEO_TOKENS_PER_CLIP))
def test_tiny_model_loads_and_generates(tiny_model_dirs, shapes_dir, arch):
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[arch])
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    rows = load_dataset(str(shapes_dir), split="test").select(range(3))
    clips = [sample_frames(r["video"], num_frames=8) for r in rows]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = video_model_inputs(processor, [text] * 3, clips)
    assert (inputs["input_ids"] == model.config.video_token_id).sum().item() == 3 * VIDEO_TOKENS_PER_CLIP[arch]
    if arch == "llava_onevision":
        assert tuple(inputs["pixel_values_videos"].shape) == (3, 8, 3, 64, 64)
    else:
        assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]] * 3
        assert "mm_token_type_ids" in inputs
    if arch == "qwen3_vl":
        # Timestamps come from the clip's real frame rate (8 fps): frame pairs (2, 3) average to 0.3125 s.
        prompt = processor.tokenizer.decode(inputs["input_ids"][0])
        assert [f"<{t} seconds>" in prompt for t in ("0.1", "0.3", "0.6", "0.8")] == [True] * 4
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 3 and out.shape[1] > inputs["input_ids"].shape[1]
    # The video reaches the language model: different clips give different logits.
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1])


def test_same_seed_same_weights(tmp_path):
    from transformers import AutoModelForImageTextToText

    from vstar.testing.tiny_models import build_tiny_vlm

    corpus = ["a red square moving left"] * 3
    a = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "a", corpus=corpus, seed=1))
    b = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "b", corpus=corpus, seed=1))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_tokenizer_round_trips_any_text():
    tokenizer = build_tokenizer(["The square is red. It moves left."] * 3)
    for text in ["The square is red.", "Ünïcødé ✓ 3½ — naïve", "<|im_start|>user\nhi<|im_end|>"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # The corpus's own words become single tokens; unseen text falls back to bytes.
    assert len(tokenizer(" square", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") != tokenizer.unk_token_id
