"""The loopback Hub driven by the real `huggingface_hub`, `datasets`, `transformers` and `peft` clients.

Needs the `hub_fixtures` plugin (`pytest -p hub_fixtures` with `tests/` on `sys.path`).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    get_session,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from vstar.testing.hub_server import LocalHub

pytestmark = pytest.mark.usefixtures("hub_env")


def _repo_id(stem: str) -> str:
    return f"vstar-org/{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(hub_env) -> HfApi:
    return hub_env.api


@pytest.fixture
def model_repo(api: HfApi) -> str:
    return api.create_repo(_repo_id("model"), private=True).repo_id


def test_create_repo_info_and_missing_repo(api: HfApi, hub_env) -> None:
    model_id, dataset_id = _repo_id("model"), _repo_id("dataset")
    url = api.create_repo(model_id, private=True)
    assert (url.repo_id, url.repo_type) == (model_id, "model")
    dataset_url = api.create_repo(dataset_id, repo_type="dataset")
    assert dataset_url == f"{hub_env.endpoint}/datasets/{dataset_id}"
    assert api.create_repo(dataset_id, repo_type="dataset", exist_ok=True) == dataset_url
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(model_id)
    assert conflict.value.response.status_code == 409

    assert api.model_info(model_id).private is True
    info = api.dataset_info(dataset_id)
    assert (
        info.private is False and info.sha is not None and [s.rfilename for s in info.siblings] == [".gitattributes"]
    )
    assert api.repo_info(dataset_id, repo_type="dataset", expand=["private"]).private is False
    assert hub_env.hub.repo(model_id).created_with_token
    assert all(record.authorized for record in hub_env.hub.requests if record.path == "/api/repos/create")

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("vstar-org/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(model_id)  # wrong repo type
    api.delete_repo(model_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(model_id)
    api.delete_repo(model_id, missing_ok=True)


def test_space_repo_settings_and_card_validation(api: HfApi) -> None:
    space = api.create_repo(_repo_id("space"), repo_type="space", space_sdk="gradio", private=True).repo_id
    assert (api.space_info(space).sdk, api.space_info(space).private) == ("gradio", True)
    api.update_repo_settings(space, repo_type="space", private=False)
    assert api.space_info(space).private is False
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(
            path_or_fileobj=b"---\na: [1\n---\n", path_in_repo="README.md", repo_id=space, repo_type="space"
        )
    card = b"---\nlicense: mit\ntags: [video]\n---\n# Card\n"
    api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=space, repo_type="space")
    info = api.space_info(space)
    assert (info.card_data.license, info.tags) == ("mit", ["video"])


def test_upload_list_and_download(api: HfApi, model_repo: str, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "nested" / "deep").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "nested" / "notes.txt").write_text("hello")
    (folder / "nested" / "deep" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    first = api.upload_folder(repo_id=model_repo, folder_path=folder, commit_message="folder")
    api.upload_file(path_or_fileobj=b"# card\n", path_in_repo="README.md", repo_id=model_repo)

    files = api.list_repo_files(model_repo)
    assert files == [".gitattributes", "README.md", "config.json", "nested/deep/weights.bin", "nested/notes.txt"]
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(model_repo)}
    assert top == {
        "nested": "RepoFolder",
        ".gitattributes": "RepoFile",
        "README.md": "RepoFile",
        "config.json": "RepoFile",
    }
    [weights] = list(api.list_repo_tree(model_repo, "nested/deep", expand=True))
    assert weights.lfs is not None and weights.lfs.size == 2048 and weights.last_commit.oid == first.oid
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(model_repo, "no/such/folder"))
    infos = api.get_paths_info(model_repo, ["config.json", "nested", "missing.txt"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "config.json"), ("RepoFolder", "nested")]
    assert api.file_exists(model_repo, "nested/notes.txt") and not api.file_exists(model_repo, "nope.txt")

    weights_path = hf_hub_download(model_repo, "nested/deep/weights.bin")
    assert Path(weights_path).read_bytes() == bytes(range(256)) * 8
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(model_repo, "nope.txt")
    snapshot = Path(snapshot_download(model_repo, local_dir=tmp_path / "snapshot"))
    assert (snapshot / "nested" / "notes.txt").read_text() == "hello"
    siblings = {s.rfilename: s for s in api.model_info(model_repo, files_metadata=True).siblings}
    assert siblings["nested/deep/weights.bin"].lfs is not None and siblings["config.json"].lfs is None

    api.create_commit(
        model_repo,
        operations=[
            CommitOperationDelete("nested/"),
            CommitOperationCopy("config.json", "config-copy.json"),
            CommitOperationAdd("extra.txt", b"extra"),
        ],
        commit_message="reshape",
    )
    assert api.list_repo_files(model_repo) == [
        ".gitattributes",
        "README.md",
        "config-copy.json",
        "config.json",
        "extra.txt",
    ]
    commits = api.list_repo_commits(model_repo)
    assert [c.title for c in commits] == [
        "reshape",
        "Upload README.md with huggingface_hub",
        "folder",
        "initial commit",
    ]
    old_notes = hf_hub_download(model_repo, "nested/notes.txt", revision=first.oid, cache_dir=tmp_path / "cache")
    assert Path(old_notes).read_text() == "hello"


def test_range_and_head_requests(api: HfApi, model_repo: str, hub_env) -> None:
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id=model_repo)
    url = hf_hub_url(model_repo, "digits.txt")
    auth = {"authorization": f"Bearer {hub_env.token}"}
    head = get_session().head(url, headers=auth)
    assert head.headers["Content-Length"] == "10" and head.headers["X-Repo-Commit"] == api.model_info(model_repo).sha
    assert get_session().get(url, headers={**auth, "Range": "bytes=2-5"}).content == b"2345"
    assert get_session().get(url, headers={**auth, "Range": "bytes=-3"}).content == b"789"
    assert get_session().get(url, headers={**auth, "Range": "bytes=20-"}).status_code == 416
    missing = get_session().head(hf_hub_url(model_repo, "digits.txt", revision="no-such-branch"), headers=auth)
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "RevisionNotFound")


def test_branches_tags_and_pull_requests(api: HfApi, model_repo: str, tmp_path: Path) -> None:
    v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="value.txt", repo_id=model_repo)
    api.create_tag(model_repo, tag="cycle-1")
    api.create_tag(model_repo, tag="v1.0-rc.1", revision=v1.oid)
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_tag(model_repo, tag="cycle-1")
    assert conflict.value.response.status_code == 409
    api.create_tag(model_repo, tag="cycle-1", exist_ok=True)

    api.create_branch(model_repo, branch="dev")
    api.create_branch(model_repo, branch="dev", exist_ok=True)
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="value.txt", repo_id=model_repo, revision="dev")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="value.txt", repo_id=model_repo)
    pr = api.upload_file(path_or_fileobj=b"pr", path_in_repo="value.txt", repo_id=model_repo, create_pr=True)
    assert pr.pr_revision == "refs/pr/1"

    refs = api.list_repo_refs(model_repo, include_pull_requests=True)
    assert {t.name: t.target_commit for t in refs.tags} == {"cycle-1": v1.oid, "v1.0-rc.1": v1.oid}
    assert sorted(b.name for b in refs.branches) == ["dev", "main"]
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]

    def read(revision: str) -> bytes:
        path = hf_hub_download(model_repo, "value.txt", revision=revision, cache_dir=tmp_path / uuid.uuid4().hex)
        return Path(path).read_bytes()

    expected = {"cycle-1": b"v1", "v1.0-rc.1": b"v1", v1.oid: b"v1", "dev": b"dev", "main": b"v2", "refs/pr/1": b"pr"}
    assert {revision: read(revision) for revision in expected} == expected
    assert api.model_info(model_repo, revision="cycle-1").sha == v1.oid
    assert [c.commit_id for c in api.list_repo_commits(model_repo, revision="v1.0-rc.1")][0] == v1.oid
    assert api.list_repo_files(model_repo, revision="refs/pr/1") == [".gitattributes", "value.txt"]

    api.delete_tag(model_repo, tag="v1.0-rc.1")
    api.delete_branch(model_repo, branch="dev")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(model_repo, revision="dev")
    with pytest.raises(HfHubHTTPError) as stale:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=model_repo, parent_commit=v1.oid)
    assert stale.value.response.status_code == 412


def test_dataset_versions_by_tag(api: HfApi, tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict, load_dataset

    repo = _repo_id("dataset")
    first = {"prompt": ["a", "b"], "score": [1, 2]}
    second = {"prompt": ["c", "d", "e"], "score": [3, 4, 5]}
    Dataset.from_dict(first).push_to_hub(repo, config_name="default", private=True)
    Dataset.from_dict({"prompt": ["bad"], "score": [0]}).push_to_hub(repo, config_name="rejected")
    api.create_tag(repo, tag="cycle-1", repo_type="dataset")
    Dataset.from_dict(second).push_to_hub(repo, config_name="default")
    api.create_tag(repo, tag="cycle-2", repo_type="dataset")
    DatasetDict({"train": Dataset.from_dict(first), "test": Dataset.from_dict(second)}).push_to_hub(
        repo, config_name="pairs", revision="exp"
    )

    info = api.dataset_info(repo, revision="cycle-2")
    assert info.private is True
    assert sorted(c["config_name"] for c in info.card_data.configs) == ["default", "rejected"]
    parquet = [s for s in api.dataset_info(repo, files_metadata=True).siblings if s.rfilename.endswith(".parquet")]
    assert parquet and all(s.lfs is not None for s in parquet)

    def load(revision: str, name: str = "default", split: str = "train") -> dict:
        dataset = load_dataset(repo, name=name, revision=revision, split=split, cache_dir=tmp_path / uuid.uuid4().hex)
        return dataset.to_dict()

    assert load("cycle-1") == first
    assert load("cycle-2") == second
    assert load("main", name="rejected") == {"prompt": ["bad"], "score": [0]}
    assert load("exp", name="pairs", split="test") == second
    tags = {tag.name: tag.target_commit for tag in api.list_repo_refs(repo, repo_type="dataset").tags}
    assert load(tags["cycle-1"]) == first  # a commit id works as well as the tag


def test_transformers_and_peft_from_pretrained(api: HfApi, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    repo = _repo_id("tiny-llama")
    api.create_repo(repo)
    model.save_pretrained(tmp_path / "model")
    api.upload_folder(repo_id=repo, folder_path=tmp_path / "model")
    api.create_tag(repo, tag="cycle-1")
    api.upload_file(path_or_fileobj=b"later", path_in_repo="notes.txt", repo_id=repo)

    loaded = AutoModelForCausalLM.from_pretrained(repo, revision="cycle-1", cache_dir=tmp_path / "cache")
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in model.state_dict().items())

    adapter = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    adapter_repo = api.create_repo(_repo_id("tiny-lora")).repo_id
    api.upload_folder(repo_id=adapter_repo, folder_path=tmp_path / "adapter")
    api.create_tag(adapter_repo, tag="cycle-1")
    base = AutoModelForCausalLM.from_pretrained(repo, revision="cycle-1", cache_dir=tmp_path / "cache")
    restored = PeftModel.from_pretrained(base, adapter_repo, revision="cycle-1", cache_dir=tmp_path / "cache")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(adapter(input_ids=ids).logits, restored(input_ids=ids).logits)


def test_server_error_on_commit_leaves_no_commit(api: HfApi, model_repo: str, hub_env) -> None:
    before = [c.commit_id for c in api.list_repo_commits(model_repo)]
    rule = hub_env.hub.inject_fault(r"/api/models/.+/commit/", method="POST", status=500)
    with pytest.raises(HfHubHTTPError) as failure:  # the commit call is not retried by the client
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=model_repo)
    assert failure.value.response.status_code == 500 and rule.fired == 1
    assert [c.commit_id for c in api.list_repo_commits(model_repo)] == before
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=model_repo)
    assert len(api.list_repo_commits(model_repo)) == len(before) + 1


def test_dropped_connections(api: HfApi, model_repo: str, hub_env) -> None:
    hub = hub_env.hub
    before = len(api.list_repo_commits(model_repo))
    hub.inject_fault(r"/commit/main$", method="POST", action="drop")
    with pytest.raises(httpx2.TransportError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=model_repo)
    assert len(api.list_repo_commits(model_repo)) == before

    # Requests sent through the client's backoff helper (preupload, LFS) are retried after a dropped connection.
    retried = hub.inject_fault(r"/preupload/", method="POST", action="drop")
    api.upload_file(path_or_fileobj=b"y", path_in_repo="y.txt", repo_id=model_repo)
    assert retried.fired == 1 and retried.seen == 2

    # A response lost after the commit was applied: the client fails but the commit exists.
    hub.inject_fault(r"/commit/main$", method="POST", action="drop_after")
    with pytest.raises(httpx2.TransportError):
        api.upload_file(path_or_fileobj=b"z", path_in_repo="z.txt", repo_id=model_repo)
    assert api.file_exists(model_repo, "z.txt") and api.file_exists(model_repo, "y.txt")
    assert not api.file_exists(model_repo, "x.txt")


def test_storage_persists_across_restarts(tmp_path: Path) -> None:
    with LocalHub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token="hf_other")
        repo = api.create_repo("someone/persisted", repo_type="dataset").repo_id
        commit = api.upload_file(path_or_fileobj=b"kept", path_in_repo="a.bin", repo_id=repo, repo_type="dataset")
        api.create_tag(repo, tag="keep", repo_type="dataset")
    with pytest.raises(httpx2.TransportError):  # a stopped hub answers nothing, even on kept-alive connections
        api.list_repo_refs(repo, repo_type="dataset")
    with LocalHub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token="hf_other")
        assert api.list_repo_refs(repo, repo_type="dataset").tags[0].target_commit == commit.oid
        path = hf_hub_download(
            repo, "a.bin", repo_type="dataset", revision="keep", endpoint=hub.url, cache_dir=tmp_path / "cache"
        )
        assert Path(path).read_bytes() == b"kept"


def test_paginated_tree_and_commits(tmp_path: Path) -> None:
    with LocalHub(tmp_path / "hub", page_size=2) as hub:
        api = HfApi(endpoint=hub.url, token="hf_other")
        repo = api.create_repo("someone/paged").repo_id
        for index in range(3):
            operations = [CommitOperationAdd(f"dir/file-{index}-{part}.txt", b"%d" % part) for part in range(2)]
            api.create_commit(repo, operations=operations, commit_message=f"commit {index}")
        assert len(api.list_repo_files(repo)) == 7
        assert [c.title for c in api.list_repo_commits(repo)][:3] == ["commit 2", "commit 1", "commit 0"]
        assert len(list(api.list_repo_tree(repo, "dir"))) == 6
        assert sum("cursor" in record.query for record in hub.requests) >= 5
