"""Cards: licence and citation settings, the usage snippet of a full finetune, the vstar version on source cards."""

import re
import shutil

import yaml
from loop_helpers import training_config

from vstar.cards import video_star_citation, write_instruction_card, write_model_card
from vstar.configs import CycleConfig
from vstar.lineage import dataset_revision, model_revision, vstar_version


def _front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_a_full_finetunes_card_loads_with_its_own_snippet(tiny_model_dirs, shapes_dir, tmp_path):
    base = tiny_model_dirs["qwen2_5_vl"]
    model_dir = shutil.copytree(base, tmp_path / "model")  # a full finetune's directory: a whole model
    config = CycleConfig(source_dataset=str(shapes_dir), run_dir=str(tmp_path), task="shapes", card_license="mit")
    (tmp_path / "config.yaml").write_text("task: shapes\nnum_cycles: 1\n")
    train = training_config(model_name_or_path=str(base), finetuning="full")
    entry = {"cycle": 1, "heldout_accuracy": 0.5, "heldout_parse_rate": 1.0}
    card = write_model_card(model_dir, entry, [entry], config, train, dataset_dir=tmp_path / "data").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "mit" and meta["library_name"] == "transformers"
    assert meta["base_model"] == str(base)
    assert f"| finetuned model | {model_dir} | {model_revision(model_dir)} |" in card
    for expected in (model_revision(base), dataset_revision(shapes_dir), vstar_version(), "num_cycles: 1"):
        assert expected in card
    assert "PeftModel" not in card
    # The snippet of a card written for a local model loads that model.
    snippet = re.search(r"## Use it\n\n```python\n(.*?)```", card, re.S).group(1)
    namespace = {}
    exec(snippet, namespace)
    assert type(namespace["model"]).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_licence_and_citation_are_settings_and_video_star_is_always_cited(tmp_path):
    from vstar.assemble import assemble_cycle
    from vstar.tasks import get_task

    stats = assemble_cycle({}, [], [], get_task("shapes"), cycle=1, output_dir=tmp_path)
    bibtex = "@misc{ours2026,\n  title = {Our clips},\n  year = {2026}\n}"
    config = CycleConfig(source_dataset="unused", card_license="cc-by-nc-4.0", card_citation=bibtex)
    card = write_instruction_card(tmp_path, stats=stats, config=config, history=[]).read_text()
    assert _front_matter(card)["license"] == "cc-by-nc-4.0"
    block = re.search(r"```bibtex\n(.*?)```", card, re.S).group(1)
    assert block.index("@misc{ours2026") < block.index("@article{zohar2024videostar")
    assert video_star_citation().strip() in block
    default = write_instruction_card(tmp_path, stats=stats, config=CycleConfig(), history=[]).read_text()
    assert _front_matter(default)["license"] == "apache-2.0" and "ours2026" not in default
    assert "zohar2024videostar" in default


def test_a_source_card_names_the_vstar_that_built_it(shapes_dir):
    assert (
        f"vstar](https://github.com/vstar-project/vstar) {vstar_version()} with"
        in (shapes_dir / "README.md").read_text()
    )


def test_model_index_carries_every_heldout_metric_of_a_quality_task(tiny_model_dirs, tmp_path):
    config = CycleConfig(source_dataset=str(tmp_path / "data"), run_dir=str(tmp_path), task="action_quality")
    (tmp_path / "config.yaml").write_text("task: action_quality\n")
    heldout = {"accuracy": 0.2, "spearman": 0.61, "relative_l2": 0.03, "score_mae": 4.5, "num_examples": 40}
    entry = {"cycle": 2, "heldout_accuracy": 0.2, "heldout_parse_rate": 0.9, "heldout": heldout}
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "adapter_config.json").write_text("{}")
    train = training_config(model_name_or_path=str(tiny_model_dirs["qwen2_5_vl"]))
    card = write_model_card(model_dir, entry, [entry], config, train, dataset_dir=tmp_path / "data").read_text()
    metrics = _front_matter(card)["model-index"][0]["results"][0]["metrics"]
    assert [(m["type"], m["value"]) for m in metrics] == [
        ("accuracy", 0.2),
        ("relative_l2", 0.03),
        ("mae", 4.5),
        ("spearmanr", 0.61),
    ]
