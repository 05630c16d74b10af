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

    def tag(self, repo_id: str, repo_type: str, tag: str, revision: str, message: str = "") -> None:
        """Tag `revision`; a tag already on that commit is fine, one on another commit is moved."""
        refs = with_retries(lambda: self.api.list_repo_refs(repo_id, repo_type=repo_type), f"list refs of {repo_id}")
        existing = {t.name: t.target_commit for t in refs.tags}
        if existing.get(tag) == revision:
            return
        if tag in existing:
            with_retries(lambda: self.api.delete_tag(repo_id, tag=tag, repo_type=repo_type), f"delete tag {tag}")
        with_retries(
            lambda: self.api.create_tag(
                repo_id, tag=tag, revision=revision, repo_type=repo_type, tag_message=message or tag
            ),
            f"tag {repo_id} {tag}",
        )

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


def push_cycle(
    publisher: HubPublisher,
    run_dir: str | Path,
    cycle: int,
    dataset_repo: str,
    model_repo: str,
    card_writer: Callable[[str, str], Any] | None = None,
) -> dict[str, str]:
    """Push one cycle's instruction dataset and adapter, then tag both `cycle-<k>`.

    Args:
        publisher: the Hub client.
        run_dir: the run directory.
        cycle: the cycle to push.
        dataset_repo, model_repo: target repos.
        card_writer: rewrites the model card for the pushed dataset `(dataset_repo, dataset_sha)` before the model is
            uploaded, so the card names the exact dataset commit.

    Returns:
        `{"dataset_commit": sha, "model_commit": sha}`.
    """
    run_dir = Path(run_dir)
    tag = cycle_tag(cycle)
    dataset_sha = publisher.push_dataset_dir(
        run_dir / tag / "dataset", dataset_repo, ("default", "rejected"), message=f"Video-STaR {tag} data"
    )
    if card_writer is not None:
        card_writer(dataset_repo, dataset_sha)
    model_dir = run_dir / tag / "model"
    model_sha = publisher.push_model_dir(model_dir, model_repo, message=f"Video-STaR {tag} model")
    merged_sha = None
    if (model_dir / "merged").is_dir():
        # A repo of its own: transformers would take a root `adapter_config.json` for the model to load.
        merged_sha = publisher.push_model_dir(
            model_dir / "merged", merged_repo(model_repo), message=f"Video-STaR {tag} merged"
        )
    # Tags only once every push succeeded: a half-pushed version carries no tag.
    publisher.tag(dataset_repo, "dataset", tag, dataset_sha)
    publisher.tag(model_repo, "model", tag, model_sha)
    if merged_sha:
        publisher.tag(merged_repo(model_repo), "model", tag, merged_sha)
    logger.info("Pushed %s: %s@%s, %s@%s", tag, dataset_repo, dataset_sha[:8], model_repo, model_sha[:8])
    result = {"dataset_commit": dataset_sha, "model_commit": model_sha}
    if merged_sha:
        result["merged_commit"] = merged_sha
    return result
