"""Lineage: revisions of local and Hub models and datasets, and a pushed run whose cards pin what it was made of."""

import json
import logging
import re
import shutil

import pytest
from loop_helpers import small_cycle_config, training_config

from vstar.cycle import CycleRunner
from vstar.hub import HubPublisher
from vstar.io import load_split
from vstar.lineage import (
    HASH_PREFIX,
    base_tag,
    dataset_revision,
    generator_name,
    model_revision,
    publish_base_model,
    vstar_version,
)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_local_model_is_pinned_by_the_content_of_its_weights_and_configs(tiny_model_dirs, tmp_path):
    model = tiny_model_dirs["qwen2_5_vl"]
    revision = model_revision(model)
    assert revision.startswith(HASH_PREFIX) and len(revision) == len(HASH_PREFIX) + 16
    copy = _copy(model, tmp_path / "copy")
    assert model_revision(copy) == revision  # the same weights elsewhere: the same revision
    (copy / "README.md").write_text("a new card")
    (copy / "training_args.bin").write_bytes(b"run-specific")
    assert model_revision(copy) == revision  # cards and run files do not change the model
    config = json.loads((copy / "config.json").read_text())
    config["vstar_test_field"] = 1
    (copy / "config.json").write_text(json.dumps(config))
    assert model_revision(copy) != revision
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weight or config files"):
        model_revision(tmp_path / "empty")


def test_a_local_dataset_is_pinned_by_its_parquet_files(shapes_dir, tmp_path):
    revision = dataset_revision(shapes_dir)
    copy = _copy(shapes_dir, tmp_path / "copy")
    (copy / "README.md").write_text("edited card")
    assert dataset_revision(copy) == revision
    first = sorted(copy.rglob("*.parquet"))[0]
    first.unlink()
    assert dataset_revision(copy) != revision


def test_hub_ids_resolve_to_the_commit_of_the_requested_revision(hub_env, tiny_model_dirs, shapes_dir, caplog):
    publisher = HubPublisher()
    first = publisher.push_model_dir(tiny_model_dirs["qwen2_5_vl"], "vstar-org/lineage-model", message="one")
    publisher.tag("vstar-org/lineage-model", "model", "v1", first)
    (hub_env.hub_cache.parent / "note.txt").write_text("second commit")
    hub_env.api.upload_file(
        path_or_fileobj=str(hub_env.hub_cache.parent / "note.txt"),
        path_in_repo="note.txt",
        repo_id="vstar-org/lineage-model",
    )
    head = hub_env.api.model_info("vstar-org/lineage-model").sha
    assert head != first
    assert model_revision("vstar-org/lineage-model") == head
    assert model_revision("vstar-org/lineage-model", revision="v1") == first

    sha = publisher.push_dataset_dir(shapes_dir, "vstar-org/lineage-data")
    assert dataset_revision("vstar-org/lineage-data") == sha == hub_env.api.dataset_info("vstar-org/lineage-data").sha

    # Out of the Hub's reach the revision is recorded as given, with a warning, and nothing is lost.
    with caplog.at_level(logging.WARNING, logger="vstar.lineage"):
        assert model_revision("vstar-org/does-not-exist", revision="v2") == "v2"
    assert "Cannot resolve model vstar-org/does-not-exist@v2" in caplog.text
    assert generator_name("vstar-org/lineage-model", str(tiny_model_dirs["qwen2_5_vl"])) == (
        f"vstar-org/lineage-model@{head}+{tiny_model_dirs['qwen2_5_vl']}@{model_revision(tiny_model_dirs['qwen2_5_vl'])}"
    )


def test_a_local_base_model_is_pushed_once_and_a_hub_base_is_only_named(hub_env, tiny_model_dirs):
    publisher = HubPublisher()
    base = tiny_model_dirs["qwen2_5_vl"]
    repo, sha = publish_base_model(publisher, base, "vstar-org/once")
    assert repo == "vstar-org/once-base"
    tags = {t.name: t.target_commit for t in hub_env.api.list_repo_refs(repo).tags}
    assert tags == {base_tag(model_revision(base)): sha}
    commits = len(hub_env.api.list_repo_commits(repo))
    assert publish_base_model(publisher, base, "vstar-org/once") == (repo, sha)
    assert len(hub_env.api.list_repo_commits(repo)) == commits  # the same weights are not uploaded again
    assert publish_base_model(publisher, base, "vstar-org/once", repo="vstar-org/chosen-base")[0] == (
        "vstar-org/chosen-base"
    )
    # A Hub base is named with its commit; nothing is pushed.
    assert publish_base_model(publisher, repo, "vstar-org/other") == (repo, hub_env.api.model_info(repo).sha)
    assert not hub_env.api.repo_exists("vstar-org/other-base")


CITATION = "@misc{mylab2026clips,\n  title = {Our clips},\n  author = {Lab, My},\n  year = {2026}\n}"


@pytest.fixture(scope="module")
def pushed_run(warm_models, shapes_dir, tmp_path_factory, local_hub):
    """A two-cycle run pushed by the loop itself (hub_repo set), from a base model that is a local directory."""
    import datasets.config

    datasets.config.USE_PARQUET_EXPORT = False
    run_dir = tmp_path_factory.mktemp("lineage-run")
    config = small_cycle_config(
        run_dir,
        shapes_dir,
        source_limit=12,
        eval_limit=4,
        num_cycles=2,
        hub_repo="vstar-org/lineage",
        hub_dataset_repo="vstar-org/lineage-data-run",
        card_license="cc-by-4.0",
        card_citation=CITATION,
    )
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(run_dir / "train"))
    history = CycleRunner(config, train).run()
    assert [h["cycle"] for h in history] == [0, 1, 2]
    return run_dir


def test_a_pushed_run_pins_its_lineage_in_every_card(hub_env, pushed_run, warm_models, shapes_dir):
    api = hub_env.api
    base = warm_models["qwen2_5_vl"]
    base_revision = model_revision(base)
    source_commit = dataset_revision(shapes_dir)
    for cycle in (1, 2):
        tag = f"cycle-{cycle}"
        dataset_sha = {
            t.name: t.target_commit for t in api.list_repo_refs("vstar-org/lineage-data-run", repo_type="dataset").tags
        }[tag]
        card = open(api.hf_hub_download("vstar-org/lineage", "README.md", revision=tag)).read()
        adapter_revision = model_revision(pushed_run / tag / "model")
        for expected in (str(base), base_revision, dataset_sha, source_commit, vstar_version(), adapter_revision):
            assert expected in card, expected
        assert "license: cc-by-4.0" in card and "mylab2026clips" in card and "zohar2024videostar" in card
        assert "base_model: vstar-org/lineage-base" in card  # Hub metadata names a Hub id, not a local path
        assert "cycle_init: previous" in card  # the resolved settings travel with the card

        data_card = open(
            api.hf_hub_download("vstar-org/lineage-data-run", "README.md", repo_type="dataset", revision=tag)
        ).read()
        generator = generator_name(str(base), None if cycle == 1 else str(pushed_run / "cycle-1" / "model"))
        for expected in (generator, source_commit, vstar_version(), "license: cc-by-4.0", "zohar2024videostar"):
            assert expected in data_card, expected
        assert set(load_split(pushed_run / tag / "dataset", "train")["generator"]) == {generator}
        assert set(load_split(pushed_run / tag / "dataset", "train", "rejected")["generator"]) <= {generator}

    # The local base went up once, next to the model, tagged with its content hash.
    tags = {t.name for t in api.list_repo_refs("vstar-org/lineage-base").tags}
    assert tags == {base_tag(base_revision)}


def test_the_model_cards_snippet_runs_for_someone_else(hub_env, pushed_run, warm_models, tmp_path):
    card = open(hub_env.api.hf_hub_download("vstar-org/lineage", "README.md", revision="cycle-2")).read()
    snippet = re.search(r"## Use it\n\n```python\n(.*?)```", card, re.S).group(1)
    assert 'from_pretrained("vstar-org/lineage-base", revision="' in snippet
    # Run as someone else would: an empty cache (hub_env) and no local base directory the run started from.
    base = warm_models["qwen2_5_vl"]
    hidden = base.with_name(base.name + "-hidden")
    base.rename(hidden)
    namespace = {}
    try:
        exec(compile(snippet, "model-card-snippet", "exec"), namespace)
    finally:
        hidden.rename(base)
    assert [type(namespace[k]).__name__ for k in ("base", "model", "processor")] == [
        "Qwen2_5_VLForConditionalGeneration",
        "PeftModelForCausalLM",
        "Qwen2_5_VLProcessor",
    ]
    assert namespace["base"].name_or_path == "vstar-org/lineage-base"
    assert any(hub_env.hub_cache.rglob("adapter_model.safetensors"))  # the adapter came through the Hub's cache


def test_an_adapter_on_another_base_model_warns(tiny_model_dirs, tmp_path, caplog):
    import json
    import shutil

    from vstar.lineage import check_adapter_base

    base = tiny_model_dirs["qwen2_5_vl"]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert check_adapter_base(str(base), str(adapter)) is None
    # A copy of the same weights elsewhere is the same base.
    copy = shutil.copytree(base, tmp_path / "copy")
    assert check_adapter_base(str(copy), str(adapter)) is None
    other = tiny_model_dirs["qwen2_vl"]
    message = check_adapter_base(str(other), str(adapter))
    assert message and str(base) in message and str(other) in message and "--model" in message
    assert message in caplog.text
