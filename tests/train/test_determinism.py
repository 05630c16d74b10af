"""One seed, one adapter: two identical trainings give bit-identical LoRA weights (the adapter is created seeded)."""

import torch
from loop_helpers import training_config
from safetensors.torch import load_file

from vstar.train.sft import train

ADAPTER = "adapter_model.safetensors"


def test_two_identical_runs_give_bit_identical_adapters(tiny_model_dirs, shapes_dir, tmp_path):
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task

    dataset = write_seed_dataset(tmp_path / "data", seed_rows(shapes_dir, 8, get_task("shapes"), seed=0))
    outputs = []
    for run in range(2):
        torch.rand(10 + run)  # whatever else drew random numbers in the process before must not matter
        output = tmp_path / f"run-{run}"
        config = training_config(
            model_name_or_path=str(tiny_model_dirs["qwen2_5_vl"]),
            output_dir=str(output),
            dataset=str(dataset),
            max_steps=2,
            per_device_train_batch_size=4,
        )
        train(config)
        outputs.append(output / ADAPTER)
    first, second = (load_file(str(path)) for path in outputs)
    assert first.keys() == second.keys()
    assert max((first[k] - second[k]).abs().max().item() for k in first) == 0.0
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    # Trained, not just initialised alike: LoRA B starts at zero and must have moved.
    assert any(first[k].abs().max() > 0 for k in first if "lora_B" in k)
