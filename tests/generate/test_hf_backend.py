"""The transformers backend's model loading under a DeepSpeed ZeRO-3 training config."""

import pytest
import torch

from vstar.generate.hf import load_generation_model


class ZeRO3Settings:
    """What transformers keeps after a ZeRO-3 training config was parsed (its `HfDeepSpeedConfig`)."""

    config = {"zero_optimization": {"stage": 3}}

    def is_zero3(self) -> bool:
        return True


def test_generation_loads_whole_weights_when_training_uses_zero3(tiny_model_dirs):
    from transformers import AutoModelForImageTextToText
    from transformers.integrations import deepspeed

    model_dir = str(tiny_model_dirs["qwen2_5_vl"])  # built before ZeRO-3 is switched on
    settings = ZeRO3Settings()
    deepspeed.set_hf_deepspeed_config(settings)
    try:
        assert deepspeed.is_deepspeed_zero3_enabled()
        # Partitioned loading is what ZeRO-3 would do here; without DeepSpeed installed it cannot even start.
        with pytest.raises(ImportError, match="deepspeed"):
            AutoModelForImageTextToText.from_pretrained(model_dir)
        model = load_generation_model(model_dir)
        # The training config is back in force for the trainer.
        assert deepspeed.is_deepspeed_zero3_enabled()
    finally:
        deepspeed.unset_hf_deepspeed_config()
    reference = AutoModelForImageTextToText.from_pretrained(model_dir)
    for (name, loaded), (_, expected) in zip(model.named_parameters(), reference.named_parameters()):
        assert loaded.shape == expected.shape and torch.equal(loaded, expected), name
