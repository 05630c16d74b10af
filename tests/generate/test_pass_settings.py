"""One loaded model serves passes that decode differently; evaluation is greedy unless asked; close frees the model."""

import gc
import json
import weakref

import pytest

from vstar.cli import main
from vstar.configs import CycleConfig
from vstar.errors import ConfigError
from vstar.evaluate.cli import EvalConfig
from vstar.generate.base import GenerationSettings, build_requests, get_backend, read_generations, run_generation
from vstar.io import SourceRows, load_split
from vstar.tasks.base import get_task


def _requests(shapes_dir, n=6):
    rows = SourceRows(load_split(shapes_dir, "test").select(range(n))).lazy_rows()
    return build_requests(get_task("shapes"), rows, "eval", seed=0)


def test_each_pass_decodes_with_its_own_settings(warm_models, shapes_dir, tmp_path):
    sampled = GenerationSettings(batch_size=6, max_new_tokens=24, temperature=1.5, seed=1)
    greedy = GenerationSettings(batch_size=6, max_new_tokens=24)
    requests = _requests(shapes_dir)
    backend = get_backend(sampled, str(warm_models["qwen2_5_vl"]))
    run_generation(requests, backend, tmp_path / "a", "sampled", sampled)
    run_generation(requests, backend, tmp_path / "a", "greedy", greedy)
    fresh = get_backend(greedy, str(warm_models["qwen2_5_vl"]))
    run_generation(requests, fresh, tmp_path / "b", "greedy", greedy)
    reused = [r["answer"] for r in read_generations(tmp_path / "a", "greedy")]
    assert reused == [r["answer"] for r in read_generations(tmp_path / "b", "greedy")]
    assert reused != [r["answer"] for r in read_generations(tmp_path / "a", "sampled")]


def test_held_out_evaluation_is_greedy_unless_asked(warm_models, shapes_dir, tmp_path):
    config = CycleConfig(source_dataset=str(shapes_dir), task="shapes", temperature=0.9, top_p=0.8)
    generation = config.generation_settings(8, None, 0)
    assert (generation.temperature, generation.top_p) == (0.9, 0.8)
    evaluation = config.evaluation_settings(generation)
    assert (evaluation.temperature, evaluation.top_p) == (0.0, 1.0)
    assert evaluation.num_frames == generation.num_frames and evaluation.batch_size == generation.batch_size
    sampled_eval = CycleConfig(source_dataset=str(shapes_dir), task="shapes", eval_temperature=0.7, eval_top_p=0.9)
    assert sampled_eval.evaluation_settings(generation).temperature == 0.7
    # `vstar cycle` and `vstar eval` share the setting and its checks.
    with pytest.raises(ConfigError, match="eval_top_p"):
        EvalConfig(eval_temperature=0.7, eval_top_p=0)
    assert EvalConfig(eval_temperature=0.7, eval_top_p=0.9).evaluation_settings(generation).top_p == 0.9

    common = ["eval", "--model", str(warm_models["qwen2_5_vl"]), "--dataset", str(shapes_dir), "--task", "shapes",
              "--limit", "6", "--max_new_tokens", "24"]  # fmt: skip
    main([*common, "--temperature", "1.5", "--output", str(tmp_path / "recipe" / "results.json")])
    main([*common, "--output", str(tmp_path / "greedy" / "results.json")])
    key = json.loads((tmp_path / "recipe" / "results.generations" / "eval-generation_key.json").read_text())
    assert key["temperature"] == 0.0
    answers = [
        [r["answer"] for r in read_generations(tmp_path / name / "results.generations", "eval")]
        for name in ("recipe", "greedy")
    ]
    assert answers[0] == answers[1]


def test_close_frees_the_model(warm_models):
    backend = get_backend(GenerationSettings(), str(warm_models["qwen2_5_vl"]))
    model = weakref.ref(backend.model)
    backend.close()
    gc.collect()
    assert backend.model is None and model() is None
