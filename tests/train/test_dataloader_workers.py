"""Clips decoded and preprocessed in DataLoader worker processes, ahead of the training step."""

import math

import torch
from loop_helpers import SEED_CLIPS, training_config

from vstar.demo import seed_rows, write_seed_dataset
from vstar.io import load_split
from vstar.tasks.base import get_task
from vstar.train.collator import VideoSFTCollator
from vstar.train.sft import train


def test_worker_processes_build_the_same_batches_and_train(tiny_model_dirs, shapes_dir, tmp_path):
    from torch.utils.data import DataLoader
    from transformers import AutoProcessor

    seed_dir = write_seed_dataset(tmp_path / "seed", seed_rows(shapes_dir, SEED_CLIPS, get_task("shapes"), seed=0))
    rows = load_split(seed_dir, "train")
    collator = VideoSFTCollator(AutoProcessor.from_pretrained(tiny_model_dirs["qwen2_5_vl"]), num_frames=8)

    def batches(workers: int) -> list[dict]:
        loader = DataLoader(
            rows, batch_size=4, collate_fn=collator, num_workers=workers, prefetch_factor=2 if workers else None
        )
        return list(loader)

    in_process, in_workers = batches(0), batches(2)
    assert len(in_process) == len(in_workers) == math.ceil(len(rows) / 4)
    for expected, got in zip(in_process, in_workers):
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), key

    config = training_config(
        model_name_or_path=str(tiny_model_dirs["qwen2_5_vl"]),
        output_dir=str(tmp_path / "model"),
        dataset=str(seed_dir),
        max_steps=4,
        per_device_train_batch_size=4,
        dataloader_num_workers=2,
        dataloader_prefetch_factor=2,
    )
    summary = train(config)
    assert summary["global_step"] == 4 and math.isfinite(summary["train_loss"])
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()
