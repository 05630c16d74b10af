"""bench/gpu_check.py runs on the CPU with the tiny preset (on a GPU machine it runs the 7B-size model)."""

import importlib.util
from pathlib import Path


def test_gpu_check_script_runs_with_the_tiny_preset(capsys):
    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--preset", "tiny"])
    assert result["preset"] == "tiny" and result["device"] == "cpu"
    generation, step = result["generation"], result["lora_step"]
    assert generation["video_tokens_per_clip"] == 16 and generation["output_tokens_per_s"] > 0
    assert step["adapter_moved"] and step["trainable_parameters_m"] > 0 and step["loss"] > 0
    assert '"lora_step"' in capsys.readouterr().out  # the figures are printed as JSON
