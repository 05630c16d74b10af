"""Versions on the (loopback) Hub with the real clients: push, tag, load back by revision, survive faults."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from loop_helpers import small_cycle_config, training_config

from vstar.cycle import CycleRunner
from vstar.hub import HubPublisher
from vstar.io import load_split
from vstar.push import PushConfig, push_run


@pytest.fixture(scope="module")
def two_cycle_run(warm_models, shapes_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = small_cycle_config(run_dir, shapes_dir, source_limit=16, num_cycles=2)
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(run_dir / "train"))
    CycleRunner(config, train).run()
    return run_dir


def test_push_a_source_dataset_and_load_it_back(hub_env, shapes_dir):
    from datasets import load_dataset

    publisher = HubPublisher(private=True)
    sha = publisher.push_dataset_dir(shapes_dir, "vstar-org/shapes-source")
    loaded = load_dataset("vstar-org/shapes-source", split="test", revision=sha)
    local = load_split(shapes_dir, "test")
    assert loaded["id"] == local["id"] and loaded["label"] == local["label"]
    assert loaded.features["label"].names == local.features["label"].names
    assert loaded[0]["video"]["bytes"] == local[0]["video"]["bytes"]
    assert hub_env.api.repo_info("vstar-org/shapes-source", repo_type="dataset").private
    # The card went up with its configs.
    readme = hub_env.api.hf_hub_download("vstar-org/shapes-source", "README.md", repo_type="dataset")
    assert "config_name: default" in open(readme).read()


def test_push_a_run_and_load_every_version(hub_env, two_cycle_run, warm_models):
    from datasets import load_dataset
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    pushed = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/star-data", model_repo="vstar-org/star"))
    assert [p["cycle"] for p in pushed] == [1, 2]

    api = hub_env.api
    data_tags = {t.name: t.target_commit for t in api.list_repo_refs("vstar-org/star-data", repo_type="dataset").tags}
    model_tags = {t.name: t.target_commit for t in api.list_repo_refs("vstar-org/star").tags}
    assert set(data_tags) == set(model_tags) == {"cycle-1", "cycle-2"}
    for item in pushed:
        tag = f"cycle-{item['cycle']}"
        assert data_tags[tag] == item["dataset_commit"] and model_tags[tag] == item["model_commit"]
        local = load_split(two_cycle_run / tag / "dataset", "train")
        remote = load_dataset("vstar-org/star-data", split="train", revision=tag)
        assert sorted(remote["id"]) == sorted(local["id"]) and set(remote["cycle"]) == {item["cycle"]}
        rejected = load_dataset("vstar-org/star-data", "rejected", split="train", revision=tag)
        assert len(rejected) == len(load_split(two_cycle_run / tag / "dataset", "train", "rejected"))
        base = AutoModelForImageTextToText.from_pretrained(warm_models["qwen2_5_vl"])
        PeftModel.from_pretrained(base, "vstar-org/star", revision=tag)
        card = api.hf_hub_download("vstar-org/star", "README.md", revision=tag)
        text = open(card).read()
        # The model card names the exact dataset commit it was trained on.
        assert item["dataset_commit"] in text and "model-index" in text

    # Pushing again adds no version and no duplicate rows.
    again = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/star-data", model_repo="vstar-org/star"))
    assert again == pushed
    assert len(load_dataset("vstar-org/star-data", split="train", revision="cycle-2")) == len(
        load_split(two_cycle_run / "cycle-2" / "dataset", "train")
    )


def test_a_fresh_process_loads_versions_knowing_only_the_repo_names(hub_env, two_cycle_run, warm_models):
    push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/fresh-data", model_repo="vstar-org/fresh"))
    script = textwrap.dedent(
        f"""
        import json
        from datasets import load_dataset
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText
        out = {{}}
        for tag in ("cycle-1", "cycle-2"):
            rows = load_dataset("vstar-org/fresh-data", split="train", revision=tag)
            base = AutoModelForImageTextToText.from_pretrained({str(warm_models["qwen2_5_vl"])!r})
            PeftModel.from_pretrained(base, "vstar-org/fresh", revision=tag)
            out[tag] = sorted(rows["id"])
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HOME": str(hub_env.hub_cache.parent / "fresh-home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for tag in ("cycle-1", "cycle-2"):
        assert loaded[tag] == sorted(load_split(two_cycle_run / tag / "dataset", "train")["id"])


def test_transient_faults_are_retried(hub_env, two_cycle_run):
    hub = hub_env.hub
    hub.inject_fault(r"/api/models/vstar-org/flaky/commit/", method="POST", action="error", status=503, times=2)
    hub.inject_fault(r"/api/models/vstar-org/flaky/commit/", method="POST", action="drop", nth=3, times=1)
    pushed = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/flaky-data", model_repo="vstar-org/flaky"))
    assert [p["cycle"] for p in pushed] == [1, 2]
    tags = {t.name for t in hub_env.api.list_repo_refs("vstar-org/flaky").tags}
    assert tags == {"cycle-1", "cycle-2"}
    hub.clear_faults()


def test_an_interrupted_push_leaves_no_tag_and_a_rerun_completes_it(hub_env, two_cycle_run):
    hub = hub_env.hub
    # The model upload keeps failing: the dataset is pushed, but neither repo gets a tag.
    hub.inject_fault(r"/api/models/vstar-org/broken/commit/", method="POST", action="error", status=500, times=50)
    with pytest.raises(Exception):  # noqa: B017  (whatever the client raises, the push must stop)
        push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/broken-data", model_repo="vstar-org/broken"))
    hub.clear_faults()
    api = hub_env.api
    assert not api.list_repo_refs("vstar-org/broken-data", repo_type="dataset").tags
    assert not api.list_repo_refs("vstar-org/broken").tags

    pushed = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/broken-data", model_repo="vstar-org/broken"))
    from datasets import load_dataset

    rows = load_dataset("vstar-org/broken-data", split="train", revision="cycle-1")
    assert sorted(rows["id"]) == sorted(load_split(two_cycle_run / "cycle-1" / "dataset", "train")["id"])
    assert {t.name for t in api.list_repo_refs("vstar-org/broken").tags} == {"cycle-1", "cycle-2"}
    assert len(pushed) == 2


def test_the_token_never_reaches_files(hub_env, two_cycle_run):
    secret = "hf_supersecret_value_123"
    push_run(
        two_cycle_run,
        PushConfig(dataset_repo="vstar-org/tok-data", model_repo="vstar-org/tok", hub_token=secret),
    )
    for path in two_cycle_run.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".yaml", ".md", ".txt"}:
            assert secret not in path.read_text(errors="ignore"), path
    assert all(r.authorized for r in hub_env.hub.requests if "/tok" in r.path)


def test_resume_from_hub(hub_env, two_cycle_run, warm_models, shapes_dir, tmp_path):
    push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/resume-data", model_repo="vstar-org/resume"))
    config = small_cycle_config(
        tmp_path / "elsewhere",
        shapes_dir,
        source_limit=16,
        num_cycles=3,
        hub_repo="vstar-org/resume",
        hub_dataset_repo="vstar-org/resume-data",
        resume_from_hub=True,
    )
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(tmp_path / "t"))
    history = CycleRunner(config, train).run()
    assert [h["cycle"] for h in history] == [0, 1, 2, 3]
    # Cycles 1 and 2 came from the Hub; only cycle 3 was generated and trained here.
    assert not (tmp_path / "elsewhere" / "cycle-1" / "dataset").exists()
    assert (tmp_path / "elsewhere" / "cycle-3" / "dataset").exists()
    tags = {t.name: t.target_commit for t in hub_env.api.list_repo_refs("vstar-org/resume").tags}
    assert set(tags) == {"cycle-1", "cycle-2", "cycle-3", "best"}
    best = json.loads((tmp_path / "elsewhere" / "metrics.json").read_text())["best"]["cycle"]
    assert tags["best"] == tags[f"cycle-{best}"]
    metrics = json.loads((tmp_path / "elsewhere" / "metrics.json").read_text())
    assert metrics["cycles"][3]["generated"] == 16


def test_build_with_push_to_hub(hub_env, tmp_path):
    from datasets import load_dataset

    from vstar.cli import main

    main(["build", "shapes", "--output", str(tmp_path / "s"), "--num_train", "4", "--num_validation", "0",
          "--num_test", "2", "--push-to-hub", "vstar-org/built", "--hub-private", "true"])  # fmt: skip
    remote = load_dataset("vstar-org/built", split="train")
    assert remote["id"] == load_split(tmp_path / "s", "train")["id"]
    assert hub_env.api.repo_info("vstar-org/built", repo_type="dataset").private


def test_merged_weights_behind_a_flag(hub_env, two_cycle_run):
    from transformers import AutoModelForImageTextToText

    push_run(
        two_cycle_run,
        PushConfig(dataset_repo="vstar-org/merged-data", model_repo="vstar-org/merged", push_merged=True),
    )
    merged = AutoModelForImageTextToText.from_pretrained("vstar-org/merged-merged", revision="cycle-2")
    assert merged.config.model_type == "qwen2_5_vl"
    adapter_files = hub_env.api.list_repo_files("vstar-org/merged", revision="cycle-2")
    assert "adapter_config.json" in adapter_files and not any(f.startswith("merged/") for f in adapter_files)
    assert {t.name for t in hub_env.api.list_repo_refs("vstar-org/merged-merged").tags} == {"cycle-1", "cycle-2"}


def tags_of(api, repo_id: str, repo_type: str = "model") -> dict[str, str]:
    return {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type=repo_type).tags}


def test_a_failed_model_tag_call_is_completed_by_a_retry(hub_env, two_cycle_run):
    hub, api = hub_env.hub, hub_env.api
    # The dataset gets its tag, then every model-tag call fails: the version is half tagged.
    rule = hub.inject_fault(r"/api/models/vstar-org/half/tag/", method="POST", action="error", status=403, times=50)
    with pytest.raises(Exception, match="403"):
        push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/half-data", model_repo="vstar-org/half"))
    hub.clear_faults()
    assert rule.fired == 1
    half_tagged = tags_of(api, "vstar-org/half-data", "dataset")
    assert set(half_tagged) == {"cycle-1"} and not tags_of(api, "vstar-org/half")
    hub.clear_requests()

    pushed = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/half-data", model_repo="vstar-org/half"))
    data_tags, model_tags = tags_of(api, "vstar-org/half-data", "dataset"), tags_of(api, "vstar-org/half")
    assert set(data_tags) == set(model_tags) == {"cycle-1", "cycle-2"}
    assert data_tags["cycle-1"] == half_tagged["cycle-1"] == pushed[0]["dataset_commit"]
    assert model_tags["cycle-1"] == pushed[0]["model_commit"]
    # The retry tagged the commits cycle 1 had pushed: its first tag call came before any upload (cycle 2's).
    paths = [r.path for r in hub.requests if r.method == "POST"]
    first_tag = next(i for i, path in enumerate(paths) if "/tag/" in path)
    assert all("/preupload/" not in path and "/commit/" not in path for path in paths[:first_tag])


def test_a_tag_whose_answer_was_lost_counts_as_created(hub_env, two_cycle_run):
    hub, api = hub_env.hub, hub_env.api
    # The server makes the tag, then the connection drops: the client's retry hears "Tag already exists".
    rule = hub.inject_fault(r"/api/models/vstar-org/lost/tag/", method="POST", action="drop_after", times=1)
    pushed = push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/lost-data", model_repo="vstar-org/lost"))
    assert rule.fired == 1
    tags = tags_of(api, "vstar-org/lost")
    assert tags == {f"cycle-{p['cycle']}": p["model_commit"] for p in pushed}
    assert set(tags_of(api, "vstar-org/lost-data", "dataset")) == {"cycle-1", "cycle-2"}


def test_a_tag_naming_another_commit_is_a_clear_error(hub_env, two_cycle_run):
    from vstar.hub import TagConflictError

    api = hub_env.api
    api.create_repo("vstar-org/taken")
    other = api.upload_file(path_or_fileobj=b"another version", path_in_repo="notes.txt", repo_id="vstar-org/taken")
    api.create_tag("vstar-org/taken", tag="cycle-1", revision=other.oid)
    with pytest.raises(TagConflictError, match=r"vstar-org/taken already has the tag cycle-1 at commit") as error:
        push_run(two_cycle_run, PushConfig(dataset_repo="vstar-org/taken-data", model_repo="vstar-org/taken"))
    assert other.oid[:12] in str(error.value) and "delete_tag" in str(error.value)
    # Nothing was tagged: no repo holds half of the version.
    assert tags_of(api, "vstar-org/taken") == {"cycle-1": other.oid}
    assert not tags_of(api, "vstar-org/taken-data", "dataset")
