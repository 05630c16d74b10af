"""Where an artifact comes from: revisions of models and datasets, the vstar version and the resolved settings.

A Hub id resolves to the commit sha its revision points to; a local directory to a content hash of the files that
make it what it is (weights and configs of a model, Parquet files of a dataset), so two copies of the same weights
name the same revision and a retrained adapter never does.

```python
from vstar.lineage import model_revision, dataset_revision
model_revision("Qwen/Qwen2.5-VL-7B-Instruct")  # the commit sha of `main`
model_revision("runs/demo/cycle-1/model")  # 'sha256:…' over the adapter's weight and config files
dataset_revision("runs/demo/source")  # 'sha256:…' over its Parquet files
```

A card or a log does not change a model's revision; its weights and configs do:

>>> import pathlib, tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> model = pathlib.Path(tmp.name)
>>> _ = (model / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
>>> _ = (model / "model.safetensors").write_bytes(b"weights")
>>> revision = model_revision(model)
>>> revision.startswith("sha256:"), len(revision)
(True, 23)
>>> _ = (model / "README.md").write_text("a new card")
>>> model_revision(model) == revision
True
>>> _ = (model / "model.safetensors").write_bytes(b"other weights")
>>> model_revision(model) == revision
False
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vstar.hub import HubPublisher

logger = logging.getLogger(__name__)

#: The files of a model directory that define the model; cards, logs and training state do not.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.json", "*.txt", "*.model", "*.jinja")
#: Files that match the patterns but change with every run or card rewrite without changing the weights.
MODEL_FILE_EXCLUDED = (
    "training_args.bin",
    "trainer_state.json",
    "train_summary.json",
    "results.json",
    "all_results.json",
)
HASH_PREFIX = "sha256:"
_SHA = re.compile(r"^[0-9a-f]{40}$")


def vstar_version() -> str:
    """The installed vstar version (the package metadata, else the source tree's `__version__`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vstar")
    except PackageNotFoundError:
        from vstar import __version__

        return __version__


def _stamp(files: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    return tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=64)
def _hash_files(stamp: tuple[tuple[str, int, int], ...], root: str) -> str:
    # Keyed on paths, sizes and modification times: a 15 GB base model is read once per process, not per card.
    total = sum(size for _, size, _ in stamp)
    if total > 1 << 30:
        logger.info("Hashing %.1f GB under %s to pin its revision (once per process).", total / (1 << 30), root)
    digest = hashlib.sha256()
    for path, size, _ in stamp:
        digest.update(f"{Path(path).relative_to(root).as_posix()}\0{size}\0".encode())
        file_digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    return HASH_PREFIX + digest.hexdigest()[:16]


def content_hash(files: Iterable[str | Path], root: str | Path) -> str:
    """A short sha256 over the relative names, sizes and contents of `files` (order-independent).

    Args:
        files: the files to hash, all under `root`.
        root: the directory the names are taken relative to.
    """
    root = Path(root).resolve()
    paths = sorted({Path(f).resolve() for f in files})
    if not paths:
        raise FileNotFoundError(f"No files to hash under {root}.")
    return _hash_files(_stamp(paths), str(root))


def model_files(directory: str | Path) -> list[Path]:
    """The weight, config, tokenizer and processor files at the top of a model or adapter directory."""
    directory = Path(directory)
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and p.name not in MODEL_FILE_EXCLUDED
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in MODEL_FILE_PATTERNS)
    )


def _hub_sha(repo_id: str, repo_type: str, revision: str | None) -> str:
    """The commit sha `revision` of a Hub repo points to; the local cache's record of it when the Hub is out of
    reach (an offline run of a cached model); the revision as given, with a warning, when neither knows."""
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
    except Exception as error:  # noqa: BLE001  (offline, unreachable, gated: fall back to what is known here)
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
    if revision and _SHA.match(revision):
        return revision
    from huggingface_hub import constants

    repo_cache = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    cached = repo_cache / "refs" / (revision or "main")
    if cached.is_file():
        return cached.read_text().strip()
    logger.warning("Cannot resolve %s %s@%s (%s): recorded as given.", repo_type, repo_id, revision or "main", reason)
    return revision or "main"


def model_revision(path_or_id: str | Path, revision: str | None = None) -> str:
    """The revision that pins a model or adapter: the Hub commit sha of `revision` (default `main`) for a Hub id, a
    content hash of the weight and config files for a local directory.

    Args:
        path_or_id: a local model/adapter directory or a Hub model id.
        revision: the Hub branch, tag or sha (ignored for a local directory).
    """
    path = Path(path_or_id)
    if path.is_dir():
        files = model_files(path)
        if not files:
            raise FileNotFoundError(f"{path} has no weight or config files ({', '.join(MODEL_FILE_PATTERNS)}).")
        return content_hash(files, path)
    if path.exists():
        return content_hash([path], path.parent)
    return _hub_sha(str(path_or_id), "model", revision)


def check_adapter_base(model: str, adapter: str | None) -> str | None:
    """Warn when an adapter is applied to another base model than the one it was trained on.

    The adapter's `adapter_config.json` names its base; the same name, the same folder or two folders with the same
    weights (content hash) count as the same base. Returns the warning (None when the bases agree or the adapter
    does not say).
    """
    import json

    if not adapter:
        return None
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None
    if not trained_on or str(trained_on) == str(model):
        return None
    trained_dir, model_dir = Path(trained_on), Path(model)
    if trained_dir.is_dir() and model_dir.is_dir():
        if trained_dir.resolve() == model_dir.resolve():
            return None
        try:
            if model_revision(trained_dir) == model_revision(model_dir):
                return None
        except FileNotFoundError:
            pass
    message = (
        f"The adapter {adapter} was trained on {trained_on}, but is applied to {model}: if these are different "
        "models its answers mean nothing. Pass the base model it was trained on (--model)."
    )
    logger.warning(message)
    return message


def dataset_revision(path_or_id: str | Path, revision: str | None = None) -> str:
    """The revision that pins a dataset: the Hub commit sha of `revision` for a Hub id, a content hash of the
    Parquet files (else of every data file) for a local directory.

    Args:
        path_or_id: a local dataset directory or a Hub dataset id.
        revision: the Hub branch, tag or sha (ignored for a local directory).
    """
    path = Path(path_or_id)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet")) or [
            p for p in path.rglob("*") if p.is_file() and p.suffix not in (".md", ".tmp") and ".cache" not in p.parts
        ]
        if not files:
            raise FileNotFoundError(f"{path} holds no data files: is it a dataset directory?")
        return content_hash(files, path)
    if path.exists():
        return content_hash([path], path.parent)
    return _hub_sha(str(path_or_id), "dataset", revision)


def pinned(path_or_id: str | Path, revision: str) -> str:
    """`name@revision`, the form the `generator` column and the cards use."""
    return f"{path_or_id}@{revision}"


def generator_name(model: str, adapter: str | None = None) -> str:
    """The model that answered, as the instruction dataset's `generator` column records it:
    `base@revision` or `base@revision+adapter@revision`.

    Args:
        model: the base model (directory or Hub id).
        adapter: the LoRA adapter on top of it, if any.
    """
    name = pinned(model, model_revision(model))
    return name + (f"+{pinned(adapter, model_revision(adapter))}" if adapter else "")


@dataclass
class Lineage:
    """What a card says an artifact was made from.

    Args:
        base_model: the base model (directory or Hub id) as the run used it.
        base_revision: its Hub sha or content hash.
        source_dataset: the source dataset as the run used it.
        source_revision: the requested revision of a Hub source (`None`: `main`).
        source_commit: the resolved Hub sha, or the content hash of a local source's Parquet files.
        vstar_version: the vstar that made the artifact.
        config: the resolved settings (the run's `config.yaml`), as YAML text.
        adapter: the adapter the card's model adds to the base, or the finetuned model itself (model cards).
        adapter_revision: its content hash.
        adapter_kind: what `adapter` is: `adapter` or `finetuned model`.
        init_adapter: the adapter the run started from, if any, pinned.
        base_repo: the Hub id the cards' usage snippets load the base from (the base itself when it is a Hub id,
            the repo it was pushed to when it is a local directory); `None` for a run not pushed.
        base_repo_revision: the commit of `base_repo` to load.
    """

    base_model: str
    base_revision: str
    source_dataset: str
    source_revision: str | None
    source_commit: str
    vstar_version: str
    config: str | None = None
    adapter: str | None = None
    adapter_revision: str | None = None
    adapter_kind: str = "adapter"
    init_adapter: str | None = None
    base_repo: str | None = None
    base_repo_revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> list[dict[str, Any]]:
        """The rows of the cards' lineage table."""
        source = self.source_dataset + (f" (requested `{self.source_revision}`)" if self.source_revision else "")
        rows = [
            {"what": "base model", "name": self.base_model, "revision": self.base_revision},
        ]
        if self.base_repo and self.base_repo != self.base_model:
            rows.append({"what": "base model on the Hub", "name": self.base_repo, "revision": self.base_repo_revision})
        if self.init_adapter:
            rows.append({"what": "starting adapter", "name": self.init_adapter, "revision": None})
        if self.adapter:
            rows.append({"what": self.adapter_kind, "name": self.adapter, "revision": self.adapter_revision})
        rows += [
            {"what": "source dataset", "name": source, "revision": self.source_commit},
            {"what": "vstar", "name": "vstar", "revision": self.vstar_version},
        ]
        return rows


def run_lineage(
    cycle_config: Any,
    train_config: Any,
    adapter: str | Path | None = None,
    base_repo: tuple[str, str] | None = None,
    adapter_kind: str = "adapter",
) -> Lineage:
    """The lineage of a run's artifact, from the run's settings.

    Args:
        cycle_config: the run's `CycleConfig` (source dataset and revision, run directory).
        train_config: the run's training config (`model_name_or_path`, `init_adapter`).
        adapter: the adapter directory the artifact adds to the base, or the finetuned model directory, if any.
        base_repo: `(repo_id, sha)` of the base model on the Hub (see `publish_base_model`).
        adapter_kind: what `adapter` is, as the cards' table names it.
    """
    base = train_config.model_name_or_path
    config_file = Path(cycle_config.run_dir) / "config.yaml"
    init_adapter = getattr(train_config, "init_adapter", None)
    return Lineage(
        base_model=str(base),
        base_revision=model_revision(base),
        source_dataset=str(cycle_config.source_dataset),
        source_revision=cycle_config.source_revision,
        source_commit=dataset_revision(cycle_config.source_dataset, cycle_config.source_revision),
        vstar_version=vstar_version(),
        config=config_file.read_text(encoding="utf-8") if config_file.exists() else None,
        adapter=str(adapter) if adapter else None,
        adapter_revision=model_revision(adapter) if adapter else None,
        adapter_kind=adapter_kind,
        init_adapter=pinned(init_adapter, model_revision(init_adapter)) if init_adapter else None,
        base_repo=base_repo[0] if base_repo else None,
        base_repo_revision=base_repo[1] if base_repo else None,
    )


def base_model_repo(model_repo: str, setting: str | None = None) -> str:
    """Where a run's local base model is pushed: the `hub_base_model_repo` setting, else `<model_repo>-base`."""
    return setting or f"{model_repo}-base"


def base_tag(revision: str) -> str:
    """The tag that marks a pushed base model's content, so the same weights are pushed once."""
    return "base-" + revision.removeprefix(HASH_PREFIX)


def publish_base_model(
    publisher: HubPublisher, base: str | Path, model_repo: str, repo: str | None = None
) -> tuple[str, str]:
    """Make the base model of a run loadable by others; returns `(hub_id, commit_sha)` for the cards' snippets.

    A Hub id is only resolved (nothing is pushed). A local directory is pushed to `repo` (default
    `<model_repo>-base`) and tagged `base-<content hash>`; a repo that already has that tag is not pushed again.

    Args:
        publisher: the Hub client.
        base: the base model (directory or Hub id).
        model_repo: the run's model repo (names the default base repo).
        repo: the repo to push a local base to (the `hub_base_model_repo` setting).
    """
    from vstar.hub import with_retries

    if not Path(base).is_dir():
        try:  # with the publisher's token: a private or gated base resolves too
            return str(base), publisher.head(str(base), "model")
        except Exception:  # noqa: BLE001  (unreachable: model_revision's fallbacks and warning)
            return str(base), model_revision(base)
    repo = base_model_repo(model_repo, repo)
    revision = model_revision(base)
    tag = base_tag(revision)
    publisher.ensure_repo(repo, "model")
    refs = with_retries(lambda: publisher.api.list_repo_refs(repo, repo_type="model"), f"list refs of {repo}")
    existing = {t.name: t.target_commit for t in refs.tags}
    if tag in existing:
        return repo, existing[tag]
    sha = publisher.push_model_dir(base, repo, message=f"Base model ({revision})")
    publisher.tag(repo, "model", tag, sha, message=f"content {revision}")
    logger.info("Pushed the local base model %s to %s@%s", base, repo, sha[:8])
    return repo, sha
