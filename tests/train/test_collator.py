"""The video SFT collator: real frames, the chat template, loss on the assistant's tokens only."""

from vstar.schema import conversation
from vstar.train.collator import IGNORE_INDEX, VideoSFTCollator


def test_labels_cover_exactly_the_answer(tiny_model_dirs, shapes_dir):
    from datasets import load_dataset
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen2_5_vl"])
    rows = load_dataset(str(shapes_dir), split="train").select(range(4))
    answers = ["The square is red.\nAnswer: red square moving left", "ok", "A much longer answer " * 5, "Two\nlines"]
    examples = [
        {"id": r["id"], "video": r["video"], "start": None, "end": None, "messages": conversation(f"Q{i}?", a)}
        for i, (r, a) in enumerate(zip(rows, answers))
    ]
    collator = VideoSFTCollator(processor, num_frames=8)
    batch = collator(examples)
    assert {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "labels"} <= set(batch)
    assert "mm_token_type_ids" in batch  # without it Qwen falls back to 1D positions
    for i, answer in enumerate(answers):
        supervised = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        assert processor.tokenizer.decode(supervised) == answer + "<|im_end|>\n"
    # Padding and the prompt (including every video token) are never supervised.
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (batch["labels"][batch["input_ids"] == video_token] == IGNORE_INDEX).all()
    # A second pass reuses the decoded clips.
    collator(examples)
    assert len(collator.clips._items) == 4


def test_clip_cache_keeps_within_its_byte_budget(shapes_dir):
    from vstar.io import load_split
    from vstar.train.collator import ClipCache

    rows = load_split(shapes_dir, "train").select(range(3)).to_list()
    one_clip = ClipCache(num_frames=8).get(rows[0]).frames.nbytes
    cache = ClipCache(num_frames=8, max_bytes=int(2.5 * one_clip))
    first = cache.get(rows[0])
    assert cache.get(rows[0]) is first  # a hit: not decoded again
    cache.get(rows[1])
    cache.get(rows[2])
    assert cache.bytes == 2 * one_clip <= cache.max_bytes
    assert cache.get(rows[2]) is cache.get(rows[2])
    assert cache.get(rows[0]) is not first  # the least recently used clip was evicted, then decoded again
    assert ClipCache(num_frames=8, max_bytes=0).get(rows[0]).frames.shape == first.frames.shape
