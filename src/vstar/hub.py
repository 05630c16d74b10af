"""Versions on the Hub: datasets and models pushed as commits, tagged `cycle-<k>` once the push succeeded.

`Dataset.push_to_hub` replaces a config's files in one commit, so a version is a commit plus a tag: re-running an
interrupted push writes the same files again (no duplicates) and only then tags. Cards are uploaded with
`HfApi.upload_file` (`RepoCard.push_to_hub` validates against the public Hub). Transient failures (connection
errors, 5xx, 429) are retried with exponential backoff. The token is passed explicitly and never logged.

```bash
vstar push runs/demo --dataset-repo my-org/shapes-star --model-repo my-org/shapes-star
```
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = {429, 500, 502, 503, 504}


def _is_transient(error: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        return response is not None and response.status_code in RETRY_STATUS
    # Connection drops and timeouts of whichever HTTP client huggingface_hub uses (httpx or httpx2).
    return isinstance(error, (ConnectionError, TimeoutError)) or any(
        cls.__name__ == "TransportError" for cls in type(error).__mro__
    )


def with_retries(call: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Run `call`, retrying transient Hub failures with exponential backoff; other errors propagate at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:  # noqa: BLE001  (classified below)
            if attempt == attempts or not _is_transient(error):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            logger.warning(
                "%s failed (%s); retrying in %.1f s (%d/%d)", what, type(error).__name__, delay, attempt, attempts
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class TagConflictError(ValueError):
    """A version tag that already names another commit of the repo: pushing would give one name two versions."""


def tag_conflict(repo_id: str, repo_type: str, tag: str, existing: str, revision: str) -> TagConflictError:
    return TagConflictError(
        f"The {repo_type} repo {repo_id} already has the tag {tag} at commit {existing[:12]}, not at "
        f"{revision[:12]} (this push): the tag names another version. To replace it, delete the tag first "
        f"(HfApi().delete_tag({repo_id!r}, tag={tag!r}, repo_type={repo_type!r})); to keep it, push to another "
        "repo."
    )


@dataclass
class HubTarget:
    """Where `vstar build` pushes the source dataset (nothing is pushed when `hub_repo` is unset)."""

    hub_repo: str | None = field(default=None, metadata={"help": "Dataset repo ORG/NAME (`--push-to-hub`)."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN / stored login)."})
    embed_videos: bool = field(default=True, metadata={"help": "Embed video bytes (else only paths are pushed)."})

    def publisher(self) -> HubPublisher:
        return HubPublisher(token=self.hub_token, private=self.hub_private, embed_videos=self.embed_videos)


class HubPublisher:
    """Pushes dataset and model versions to the Hub.

    Args:
        token: a Hub token (default: `HF_TOKEN` / the stored login).
        private: create repos as private.
        embed_videos: embed the video bytes into pushed datasets (else only paths are pushed).
    """

    def __init__(self, token: str | None = None, private: bool = False, embed_videos: bool = True):
        from huggingface_hub import HfApi

        self.api = HfApi(token=token)
        self.token = token
        self.private = private
        self.embed_videos = embed_videos

    def ensure_repo(self, repo_id: str, repo_type: str) -> None:
        with_retries(
            lambda: self.api.create_repo(repo_id, repo_type=repo_type, private=self.private, exist_ok=True),
            f"create {repo_type} repo {repo_id}",
        )

    def head(self, repo_id: str, repo_type: str, revision: str = "main") -> str:
        """The commit sha `revision` points to."""
        info = with_retries(
            lambda: self.api.repo_info(repo_id, repo_type=repo_type, revision=revision), f"read {repo_id}@{revision}"
        )
        return info.sha

    def push_dataset_dir(
        self, local_dir: str | Path, repo_id: str, configs: Sequence[str] = ("default",), message: str = ""
    ) -> str:
        """Push each config's splits of a vstar dataset directory, then its card; returns the final commit sha."""
        from datasets import DatasetDict

        from vstar.io import dataset_splits, load_split

        local_dir = Path(local_dir)
        self.ensure_repo(repo_id, "dataset")
        for config in configs:
            splits = DatasetDict({s: load_split(local_dir, s, config) for s in dataset_splits(local_dir, config)})
            with_retries(
                lambda splits=splits, config=config: splits.push_to_hub(
                    repo_id,
                    config_name=config,
                    private=self.private,
                    token=self.token,
                    embed_external_files=self.embed_videos,
                    commit_message=f"{message} ({config})".strip(),
                ),
                f"push {repo_id} config {config}",
            )
        return self.upload_card(local_dir / "README.md", repo_id, "dataset", message or "Update dataset card")

    def upload_card(self, card: str | Path, repo_id: str, repo_type: str, message: str) -> str:
        commit = with_retries(
            lambda: self.api.upload_file(
                path_or_fileobj=str(card),
                path_in_repo="README.md",
                repo_id=repo_id,
                repo_type=repo_type,
                commit_message=message,
            ),
            f"upload card to {repo_id}",
        )
        return commit.oid

    def push_model_dir(self, local_dir: str | Path, repo_id: str, message: str = "") -> str:
        """Upload an adapter (or model) directory with its processor and card in one commit; returns its sha."""
        self.ensure_repo(repo_id, "model")
        commit = with_retries(
            lambda: self.api.upload_folder(
                folder_path=str(local_dir),
                repo_id=repo_id,
                repo_type="model",
                commit_message=message or "Upload model",
                ignore_patterns=["checkpoint-*", "*.partial", "merged/*"],
            ),
            f"upload model to {repo_id}",
        )
        return commit.oid

    def tag_target(self, repo_id: str, repo_type: str, tag: str) -> str | None:
        """The commit `tag` points to in the repo, or `None` when the repo has no such tag."""
        refs = with_retries(lambda: self.api.list_repo_refs(repo_id, repo_type=repo_type), f"list refs of {repo_id}")
        return next((t.target_commit for t in refs.tags if t.name == tag), None)

    def tag(self, repo_id: str, repo_type: str, tag: str, revision: str, message: str = "") -> None:
        """Tag `revision`, idempotently: a tag already on that commit is success, one on another commit an error.

        A tag whose creation succeeded but whose answer was lost (the retry then hears "already exists") is found
        on the repo and counts as created.

        Raises:
            TagConflictError: the tag exists at another commit (another version holds the name).
        """
        existing = self.tag_target(repo_id, repo_type, tag)
        if existing == revision:
            logger.info("%s already has tag %s at %s", repo_id, tag, revision[:8])
            return
        if existing is not None:
            raise tag_conflict(repo_id, repo_type, tag, existing, revision)
        try:
            with_retries(
                lambda: self.api.create_tag(
                    repo_id, tag=tag, revision=revision, repo_type=repo_type, tag_message=message or tag
                ),
                f"tag {repo_id} {tag}",
            )
        except Exception as error:
            try:
                existing = self.tag_target(repo_id, repo_type, tag)
            except Exception:  # noqa: BLE001  (the tag call's own error is the one to report)
                raise error from None
            if existing == revision:
                logger.info("%s: tag %s was created although its answer was lost", repo_id, tag)
                return
            if existing is not None:
                raise tag_conflict(repo_id, repo_type, tag, existing, revision) from error
            raise

    def commit_exists(self, repo_id: str, repo_type: str, revision: str) -> bool:
        """Whether the repo exists and holds the commit `revision`."""
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            self.head(repo_id, repo_type, revision)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return False
        return True

    def download_model(self, repo_id: str, revision: str, local_dir: str | Path) -> Path:
        from huggingface_hub import snapshot_download

        path = with_retries(
            lambda: snapshot_download(repo_id, revision=revision, local_dir=str(local_dir), token=self.token),
            f"download {repo_id}@{revision}",
        )
        return Path(path)


def merged_repo(model_repo: str) -> str:
    """Where the merged weights of `model_repo`'s adapters go."""
    return f"{model_repo}-merged"


def cycle_tag(cycle: int) -> str:
    return f"cycle-{cycle}"


PUSH_RECORD = "hub_push.json"


def _local_fingerprint(*dirs: Path) -> list[list[Any]]:
    """Names, sizes and modification times of the data and weight files of a cycle's folders (cards excluded:
    they are rewritten before every push attempt)."""
    files = []
    for root in dirs:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in {".parquet", ".safetensors", ".bin"}:
                stat = path.stat()
                files.append([str(path.relative_to(root.parent)), stat.st_size, stat.st_mtime_ns])
    return files


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def push_cycle(
    publisher: HubPublisher,
    run_dir: str | Path,
    cycle: int,
    dataset_repo: str,
    model_repo: str,
    card_writer: Callable[[str, str], Any] | None = None,
) -> dict[str, str]:
    """Push one cycle's instruction dataset and adapter, then tag both `cycle-<k>`.

    The pushed commits are recorded in `cycle-<k>/hub_push.json` before any tag is made, so a push stopped
    between or during the tag calls completes on the next call by tagging the recorded commits (tagging is
    idempotent), instead of pushing new commits that the tags already made would then contradict.

    Args:
        publisher: the Hub client.
        run_dir: the run directory.
        cycle: the cycle to push.
        dataset_repo, model_repo: target repos.
        card_writer: rewrites the model card for the pushed dataset `(dataset_repo, dataset_sha)` before the model is
            uploaded, so the card names the exact dataset commit.

    Returns:
        `{"dataset_commit": sha, "model_commit": sha}` (plus `merged_commit` when merged weights were pushed).

    Raises:
        TagConflictError: a repo's `cycle-<k>` tag names another commit.
    """
    run_dir = Path(run_dir)
    tag = cycle_tag(cycle)
    dataset_dir, model_dir = run_dir / tag / "dataset", run_dir / tag / "model"
    record_path = run_dir / tag / PUSH_RECORD
    target = {
        "dataset_repo": dataset_repo,
        "model_repo": model_repo,
        "local_files": _local_fingerprint(dataset_dir, model_dir),
    }
    record = _read_record(record_path)
    result = None
    if record is not None and all(record.get(k) == v for k, v in json.loads(json.dumps(target)).items()):
        pushed = [(dataset_repo, "dataset", record["dataset_commit"]), (model_repo, "model", record["model_commit"])]
        if record.get("merged_commit"):
            pushed.append((merged_repo(model_repo), "model", record["merged_commit"]))
        if all(publisher.commit_exists(repo, kind, sha) for repo, kind, sha in pushed):
            logger.info("%s was pushed before (%s); completing its tags", tag, record_path)
            result = {k: v for k, v in record.items() if k.endswith("_commit") and v}
    if result is None:
        result = _push_cycle_files(publisher, dataset_dir, model_dir, tag, dataset_repo, model_repo, card_writer)
        tmp = record_path.with_name(f".{PUSH_RECORD}.tmp")
        tmp.write_text(json.dumps({**target, **result}, indent=2))
        tmp.replace(record_path)
    # Tags only once every push succeeded: a half-pushed version carries no tag. A name taken by another version
    # in any repo stops the push before the first tag, so no repo gets a tag the others cannot have.
    tags = [(dataset_repo, "dataset", result["dataset_commit"]), (model_repo, "model", result["model_commit"])]
    if result.get("merged_commit"):
        tags.append((merged_repo(model_repo), "model", result["merged_commit"]))
    for repo, kind, sha in tags:
        existing = publisher.tag_target(repo, kind, tag)
        if existing not in (None, sha):
            raise tag_conflict(repo, kind, tag, existing, sha)
    for repo, kind, sha in tags:
        publisher.tag(repo, kind, tag, sha)
    logger.info(
        "Pushed %s: %s@%s, %s@%s",
        tag,
        dataset_repo,
        result["dataset_commit"][:8],
        model_repo,
        result["model_commit"][:8],
    )
    return result


def _push_cycle_files(
    publisher: HubPublisher,
    dataset_dir: Path,
    model_dir: Path,
    tag: str,
    dataset_repo: str,
    model_repo: str,
    card_writer: Callable[[str, str], Any] | None,
) -> dict[str, str]:
    dataset_sha = publisher.push_dataset_dir(
        dataset_dir, dataset_repo, ("default", "rejected"), message=f"Video-STaR {tag} data"
    )
    if card_writer is not None:
        card_writer(dataset_repo, dataset_sha)
    model_sha = publisher.push_model_dir(model_dir, model_repo, message=f"Video-STaR {tag} model")
    result = {"dataset_commit": dataset_sha, "model_commit": model_sha}
    if (model_dir / "merged").is_dir():
        # A repo of its own: transformers would take a root `adapter_config.json` for the model to load.
        result["merged_commit"] = publisher.push_model_dir(
            model_dir / "merged", merged_repo(model_repo), message=f"Video-STaR {tag} merged"
        )
    return result
