"""A cycle asking several answers per clip: distinct verified answers kept up to the limit, greedy evaluation."""

import json

from loop_helpers import small_cycle_config, training_config

from vstar.cycle import CycleRunner
from vstar.generate.base import read_generations
from vstar.io import load_split


def test_a_cycle_with_four_sampled_answers_per_clip(warm_models, shapes_dir, tmp_path):
    config = small_cycle_config(
        tmp_path, shapes_dir, source_limit=12, eval_limit=6, num_samples_per_clip=4, max_accepted_per_clip=2,
        temperature=1.2, rationalization_temperature=0.0,
    )  # fmt: skip
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(tmp_path / "t"))
    history = CycleRunner(config, train).run()
    entry = history[1]
    generations = tmp_path / "cycle-1" / "generations"
    direct = read_generations(generations, "direct")
    assert len(direct) == 48 and {r["sample"] for r in direct} == {0, 1, 2, 3}
    assert entry["generated"] == 12 and entry["answers_direct"] == 48
    accepted = load_split(tmp_path / "cycle-1" / "dataset", "train").to_list()
    per_clip = {}
    for row in accepted:
        per_clip.setdefault(row["id"], []).append(" ".join(row["answer"].split()))
    assert per_clip and all(1 <= len(a) <= 2 and len(set(a)) == len(a) for a in per_clip.values())
    assert entry["clips_with_accepted_answer"] == len(per_clip)
    assert entry["yield"] == len(per_clip) / 12
    # Hinted retries: only clips none of whose samples passed, decoded greedily as asked.
    hinted = read_generations(generations, "rationalized")
    assert {r["id"] for r in hinted}.isdisjoint({r["id"] for r in accepted if not r["rationalized"]})
    assert any(not r["rationalized"] for r in accepted)  # some clips passed directly
    keys = {name: json.loads((generations / f"{name}-generation_key.json").read_text()) for name in ("direct",)}
    assert keys["direct"]["temperature"] == 1.2
    if hinted:
        assert json.loads((generations / "rationalized-generation_key.json").read_text())["temperature"] == 0.0
    eval_key = json.loads((tmp_path / "cycle-1" / "eval" / "eval-generation_key.json").read_text())
    assert eval_key["temperature"] == 0.0  # evaluation does not inherit the sampling temperature
