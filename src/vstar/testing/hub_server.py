"""A loopback Hugging Face Hub-compatible HTTP server for tests.

`LocalHub` serves the subset of the Hub HTTP API that the real `huggingface_hub`, `datasets`, `transformers`
and `peft` clients use to create repositories, upload files (regular and LFS), manage branches and tags, list
trees, refs and commits and download files. Point the clients at it with `HF_ENDPOINT=hub.url` (set before the
libraries are imported, together with `HF_HUB_DISABLE_XET=1`).

Storage model (persisted under ``root_dir``):

* ``blobs/<sha256>``: file contents, content-addressed.
* ``repos/<type>/<namespace>/<name>.json``: one JSON document per repository holding its commits (each commit is a
  full ``path -> file entry`` mapping plus parent, title, message and date), branches, tags and pull-request refs.

There is no real git: commit ids are random 40-hex ids, blob ids follow the git conventions (git blob sha1 for
regular files, sha1 of the LFS pointer for LFS files) so that client-side caches behave as with the real Hub.

Repository ids must have a namespace (``owner/name``); `create_repo` without one uses ``DEFAULT_USER``. Any
``Authorization: Bearer`` token is accepted; whether one was sent is recorded in `LocalHub.requests`.

Fault injection: `LocalHub.inject_fault` makes the server answer an HTTP error, or drop the connection without an
answer (before or after handling the request), for the n-th request matching a method and a path regex; the
server behaves normally otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

logger = logging.getLogger(__name__)

DEFAULT_USER = "vstar-user"
DEFAULT_BRANCH = "main"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = tuple(
    ".parquet .arrow .safetensors .bin .pt .pth .ckpt .h5 .msgpack .onnx .npy .npz .pkl .pickle .zip .gz .tar .zst "
    ".7z .mp4 .avi .mkv .webm .mov .jpg .jpeg .png .gif .webp .wav .mp3 .flac .gguf .model .tflite".split()
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
PAGE_SIZE = 1000
EXPANDED_PAGE_SIZE = 50
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ABBREVIATED_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
_FRONT_MATTER_RE = re.compile(r"^---\s*\n(.*?)\n---\s*(\n|$)", flags=re.DOTALL)


def _now() -> str:
    """Current UTC time in the Hub's date format (``2024-01-31T12:00:00.000Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in the git tree for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An error answered to the client as JSON, with the Hub's `X-Error-Code` header when `code` is set."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def repo_not_found(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")


def revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def entry_not_found(path: str, revision: str, commit_id: str | None = None) -> HubError:
    headers = {"X-Repo-Commit": commit_id} if commit_id else {}
    return HubError(404, f'Entry not found: "{path}" does not exist on "{revision}"', "EntryNotFound", headers)


@dataclass
class Reply:
    """An HTTP answer; `content_length` overrides `len(body)` (HEAD requests on files)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps(payload).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def from_error(cls, error: HubError) -> Reply:
        header_safe = " ".join(error.message.split()).encode("ascii", "backslashreplace").decode()
        headers = {"X-Error-Message": header_safe, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        return cls.json({"error": error.message}, error.status, headers)


@dataclass
class HubRequest:
    """A parsed request: path segments are percent-decoded one by one, so `refs%2Fpr%2F1` stays one segment."""

    method: str
    path: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> HubRequest:
        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        query = parse_qs(parts.query, keep_blank_values=True)
        return cls(method, parts.path, segments, query, {k.lower(): v for k, v in headers.items()}, body)

    @property
    def authorized(self) -> bool:
        return self.headers.get("authorization", "").lower().startswith("bearer ")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true", "yes")

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err


@dataclass
class FaultRule:
    """Fail the `nth` .. `nth + times - 1` requests whose method and raw path (re.search) match.

    `action` is ``"error"`` (answer `status`), ``"drop"`` (close the connection without answering, nothing is
    processed) or ``"drop_after"`` (process the request, then close the connection without answering).
    """

    pattern: re.Pattern[str]
    method: str | None = None
    action: str = "error"
    status: int = 500
    nth: int = 1
    times: int = 1
    seen: int = 0
    fired: int = 0

    def check(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if not self.pattern.search(path):
            return False
        self.seen += 1
        if self.nth <= self.seen < self.nth + self.times:
            self.fired += 1
            return True
        return False


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool
    status: int | None = None
    fault: str | None = None


@dataclass
class Repo:
    """One repository: commits are full file mappings, refs map names to commit ids."""

    repo_type: str
    repo_id: str
    private: bool = False
    created_at: str = field(default_factory=_now)
    created_with_token: bool = False
    sdk: str | None = None
    gated: str | bool = False
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[str, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return f"{URL_PREFIXES[self.repo_type]}{self.repo_id}"

    def resolve(self, revision: str) -> str:
        """Commit id for a branch, tag, `refs/...` name or (possibly abbreviated) commit id."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags), ("refs/pr/", self.pulls)):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                return refs[revision[len(prefix) :]]
        for refs in (self.branches, self.tags):
            if revision in refs:
                return refs[revision]
        if revision in self.commits:
            return revision
        if _ABBREVIATED_SHA_RE.match(revision):
            matches = [commit_id for commit_id in self.commits if commit_id.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise revision_not_found(revision)

    def files(self, commit_id: str) -> dict[str, dict[str, Any]]:
        return self.commits[commit_id]["files"]

    def history(self, commit_id: str) -> list[dict[str, Any]]:
        """Commits reachable from `commit_id` following first parents, newest first."""
        out = []
        current: str | None = commit_id
        while current is not None:
            commit = self.commits[current]
            out.append(commit)
            current = commit["parents"][0] if commit["parents"] else None
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Repo:
        return cls(**data)


class HubStore:
    """Thread-safe, disk-backed repositories and content-addressed blobs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.repo_dir = self.root / "repos"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self.repo_dir.glob("*/*/*.json")):
            repo = Repo.from_json(json.loads(path.read_text()))
            self._repos[(repo.repo_type, repo.repo_id)] = repo
        logger.debug("Loaded %d repositories from %s", len(self._repos), self.repo_dir)

    def _repo_file(self, repo: Repo) -> Path:
        return self.repo_dir / repo.repo_type / f"{repo.repo_id}.json"

    def save(self, repo: Repo) -> None:
        _atomic_write(self._repo_file(repo), json.dumps(repo.to_json()).encode())

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            _atomic_write(self.blob_path(sha256), data)
        return sha256

    def read_blob(self, sha256: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self.blob_path(sha256), "rb") as handle:
            handle.seek(start)
            return handle.read() if end is None else handle.read(end - start)

    def repos(self) -> list[Repo]:
        with self.lock:
            return list(self._repos.values())

    def get(self, repo_type: str, repo_id: str) -> Repo:
        """The repository; callers hold `lock` while they use it."""
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise repo_not_found(repo_type, repo_id)
        return repo

    def create(self, repo_type: str, repo_id: str, private: bool, authorized: bool, sdk: str | None) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_type, repo_id, private=private, created_with_token=authorized, sdk=sdk)
            files = {".gitattributes": self.file_entry(GITATTRIBUTES, lfs=False)}
            commit_id = self.add_commit(repo, None, files, "initial commit", "", author="system")
            repo.branches[DEFAULT_BRANCH] = commit_id
            self._repos[(repo_type, repo_id)] = repo
            self.save(repo)
            return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            repo = self.get(repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]
            self._repo_file(repo).unlink(missing_ok=True)

    def file_entry(self, data: bytes, lfs: bool) -> dict[str, Any]:
        """Store `data` and describe it as a regular (git) or LFS file."""
        sha256 = self.put_blob(data)
        if lfs:
            return self.lfs_entry(sha256, len(data))
        return {"sha256": sha256, "size": len(data), "lfs": False, "oid": git_blob_sha1(data)}

    @staticmethod
    def lfs_entry(sha256: str, size: int) -> dict[str, Any]:
        pointer = lfs_pointer(sha256, size)
        return {
            "sha256": sha256,
            "size": size,
            "lfs": True,
            "oid": git_blob_sha1(pointer),
            "pointer_size": len(pointer),
        }

    @staticmethod
    def add_commit(
        repo: Repo,
        parent: str | None,
        files: dict[str, dict[str, Any]],
        title: str,
        message: str,
        author: str = DEFAULT_USER,
    ) -> str:
        date = _now()
        seed = json.dumps([parent, title, date, uuid.uuid4().hex, sorted(files)]).encode()
        commit_id = hashlib.sha1(seed).hexdigest()
        repo.commits[commit_id] = {
            "id": commit_id,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": date,
            "authors": [author],
            "files": files,
        }
        return commit_id


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _split_revision(args: list[str]) -> tuple[str, list[str]]:
    """Split `[revision, *path]`; an unencoded `refs/<kind>/<name>` revision spans three segments."""
    if not args:
        return DEFAULT_BRANCH, []
    if args[0] == "refs" and len(args) >= 3 and args[1] in ("heads", "tags", "pr", "convert"):
        return "/".join(args[:3]), args[3:]
    return args[0], args[1:]


def _validate_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def parse_front_matter(text: str) -> Any:
    """The YAML front matter of a model or dataset card (None without one); raises `yaml.YAMLError` if invalid."""
    match = _FRONT_MATTER_RE.match(text)
    return yaml.safe_load(match.group(1)) if match else None


def card_data(readme: bytes) -> dict[str, Any] | None:
    """The card metadata as the Hub reports it in `cardData`, or None if absent or unparseable."""
    try:
        data = parse_front_matter(readme.decode("utf-8", errors="replace"))
    except yaml.YAMLError:
        logger.debug("Unparseable README front matter", exc_info=True)
        return None
    return data if isinstance(data, dict) else None


def _upload_mode(path: str, size: int, sample: bytes) -> str:
    if path.lower().endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
        return "lfs"
    return "regular"


class HubApp:
    """Routes parsed requests to handlers; handlers return a `Reply` or raise `HubError`."""

    def __init__(self, store: HubStore, base_url: Callable[[], str], page_size: int = PAGE_SIZE):
        self.store = store
        self.base_url = base_url
        self.page_size = page_size
        self._api_routes: dict[tuple[str, str], Callable[[HubRequest], Reply]] = {
            ("GET", "whoami-v2"): self.whoami,
            ("GET", "agent-harnesses"): lambda _req: Reply.json({"standardEnvVars": [], "harnesses": {}}),
            ("POST", "validate-yaml"): self.validate_yaml,
            ("POST", "repos/create"): self.create_repo,
            ("DELETE", "repos/delete"): self.delete_repo,
        }
        self._repo_routes: dict[tuple[str, str], Callable[[HubRequest, Repo, list[str]], Reply]] = {
            ("GET", ""): self.repo_info,
            ("GET", "revision"): self.repo_info,
            ("PUT", "settings"): self.update_settings,
            ("POST", "preupload"): self.preupload,
            ("POST", "commit"): self.commit,
            ("POST", "branch"): self.create_branch,
            ("DELETE", "branch"): self.delete_branch,
            ("POST", "tag"): self.create_tag,
            ("DELETE", "tag"): self.delete_tag,
            ("GET", "refs"): self.list_refs,
            ("GET", "commits"): self.list_commits,
            ("GET", "tree"): self.list_tree,
            ("POST", "paths-info"): self.paths_info,
        }

    # -- dispatch -------------------------------------------------------------------------------------------------

    def handle(self, req: HubRequest) -> Reply:
        try:
            return self._route(req)
        except HubError as err:
            return Reply.from_error(err)
        except Exception as err:  # a bug in the server must still answer the client
            logger.exception("LocalHub: internal error on %s %s", req.method, req.path)
            return Reply.json({"error": f"Internal error: {err!r}"}, status=500)

    def _route(self, req: HubRequest) -> Reply:
        segments = req.segments
        if segments[:1] == ["api"]:
            return self._route_api(req, segments[1:])
        if segments[:1] == ["_lfs"] and len(segments) == 3:
            return self._route_lfs_transfer(req, segments[1], segments[2])
        return self._route_repo_url(req, segments)

    def _route_api(self, req: HubRequest, segments: list[str]) -> Reply:
        method = "GET" if req.method == "HEAD" else req.method
        handler = self._api_routes.get((method, "/".join(segments)))
        if handler is not None:
            return handler(req)
        if segments and segments[0] in REPO_TYPES:
            return self._route_repo_api(req, REPO_TYPES[segments[0]], segments[1:])
        raise self._unknown(req)

    def _route_repo_api(self, req: HubRequest, repo_type: str, rest: list[str]) -> Reply:
        if len(rest) < 2:
            raise repo_not_found(repo_type, "/".join(rest))
        method = "GET" if req.method == "HEAD" else req.method
        action, args = (rest[2], rest[3:]) if len(rest) > 2 else ("", [])
        handler = self._repo_routes.get((method, action))
        if handler is None:
            raise self._unknown(req)
        with self.store.lock:
            repo = self.store.get(repo_type, f"{rest[0]}/{rest[1]}")
            return handler(req, repo, args)

    def _route_repo_url(self, req: HubRequest, segments: list[str]) -> Reply:
        repo_type = "model"
        if segments and segments[0] in ("datasets", "spaces"):
            repo_type, segments = REPO_TYPES[segments[0]], segments[1:]
        if len(segments) == 6 and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            if req.method == "POST":
                with self.store.lock:
                    repo = self.store.get(repo_type, f"{segments[0]}/{segments[1][: -len('.git')]}")
                return self.lfs_batch(req, repo)
        if len(segments) >= 4 and segments[2] == "resolve" and req.method in ("GET", "HEAD"):
            with self.store.lock:
                repo = self.store.get(repo_type, f"{segments[0]}/{segments[1]}")
                revision, path = _split_revision(segments[3:])
                commit_id = repo.resolve(revision)
                entry = repo.files(commit_id).get("/".join(path))
            if entry is None:
                raise entry_not_found("/".join(path), revision, commit_id)
            return self.resolve_file(req, entry, commit_id)
        raise self._unknown(req)

    @staticmethod
    def _unknown(req: HubRequest) -> HubError:
        logger.warning("LocalHub: no route for %s %s", req.method, req.path)
        return HubError(404, f"Not found: {req.method} {req.path}")

    # -- account and validation -----------------------------------------------------------------------------------

    def whoami(self, req: HubRequest) -> Reply:
        if not req.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        namespaces = sorted({repo.repo_id.split("/")[0] for repo in self.store.repos()} - {DEFAULT_USER})
        return Reply.json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": DEFAULT_USER,
                "fullname": "Local Hub User",
                "email": None,
                "canPay": False,
                "orgs": [{"type": "org", "name": name, "fullname": name, "roleInOrg": "admin"} for name in namespaces],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def validate_yaml(self, req: HubRequest) -> Reply:
        try:
            data = parse_front_matter(str(req.json().get("content", "")))
        except yaml.YAMLError as err:
            return Reply.json({"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []}, status=400)
        if data is not None and not isinstance(data, dict):
            return Reply.json({"errors": [{"message": "Metadata must be a YAML mapping"}], "warnings": []}, 400)
        return Reply.json({"errors": [], "warnings": []})

    # -- repositories ---------------------------------------------------------------------------------------------

    def create_repo(self, req: HubRequest) -> Reply:
        payload = req.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES or not payload.get("name"):
            raise HubError(400, f"Invalid repo type or name: {payload!r}")
        repo_id = f"{payload.get('organization') or DEFAULT_USER}/{payload['name']}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        url = f"{self.base_url()}/{URL_PREFIXES[repo_type]}{repo_id}"
        try:
            self.store.create(repo_type, repo_id, private, req.authorized, payload.get("sdk"))
        except HubError as err:
            return Reply.json({"error": err.message, "url": url}, err.status)
        logger.info("Created %s repo %s (private=%s)", repo_type, repo_id, private)
        return Reply.json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def delete_repo(self, req: HubRequest) -> Reply:
        payload = req.json()
        repo_type = payload.get("type") or "model"
        self.store.delete(repo_type, f"{payload.get('organization') or DEFAULT_USER}/{payload.get('name')}")
        return Reply.json({})

    def update_settings(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        payload = req.json()
        if "visibility" in payload:
            repo.private = payload["visibility"] != "public"
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "gated" in payload:
            repo.gated = payload["gated"]
        self.store.save(repo)
        return Reply.json({"private": repo.private, "gated": repo.gated})

    def repo_info(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        commit_id = repo.resolve("/".join(args) if args else DEFAULT_BRANCH)
        files = repo.files(commit_id)
        card = card_data(self.store.read_blob(files["README.md"]["sha256"])) if "README.md" in files else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit_id,
            "lastModified": repo.commits[commit_id]["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": _card_tags(card),
            "siblings": [self._sibling(path, files[path], req.flag("blobs")) for path in sorted(files)],
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }
        if card is not None:
            info["cardData"] = card
            info.update({key: card[key] for key in ("library_name", "pipeline_tag") if key in card})
        if repo.repo_type == "space":
            info.update({"sdk": repo.sdk, "runtime": None})
        expand = req.query.get("expand", []) + req.query.get("expand[]", [])
        if expand:
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        return Reply.json(info)

    @staticmethod
    def _sibling(path: str, entry: dict[str, Any], with_blobs: bool) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": path}
        if with_blobs:
            sibling.update({"size": entry["size"], "blobId": entry["oid"]})
            if entry["lfs"]:
                sibling["lfs"] = {
                    "size": entry["size"],
                    "sha256": entry["sha256"],
                    "pointerSize": entry["pointer_size"],
                }
        return sibling

    # -- refs -----------------------------------------------------------------------------------------------------

    def create_branch(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        branch = "/".join(args)
        if not branch or branch.startswith("refs/") or branch in repo.branches:
            status = 409 if branch in repo.branches else 400
            raise HubError(status, f"Invalid or existing branch name: {branch!r}")
        starting_point = req.json().get("startingPoint") or DEFAULT_BRANCH
        repo.branches[branch] = repo.resolve(starting_point)
        self.store.save(repo)
        return Reply.json({})

    def delete_branch(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        branch = "/".join(args)
        if branch not in repo.branches:
            raise revision_not_found(branch)
        if branch == DEFAULT_BRANCH:
            raise HubError(403, "Cannot delete the default branch")
        del repo.branches[branch]
        self.store.save(repo)
        return Reply.json({})

    def create_tag(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, _ = _split_revision(args)
        tag = str(req.json().get("tag") or "")
        if not tag or tag.startswith("refs/"):
            raise HubError(400, f"Invalid tag name: {tag!r}")
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = repo.resolve(revision)
        self.store.save(repo)
        return Reply.json({})

    def delete_tag(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        tag = "/".join(args)
        if tag not in repo.tags:
            raise revision_not_found(tag)
        del repo.tags[tag]
        self.store.save(repo)
        return Reply.json({})

    def list_refs(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        def refs(table: dict[str, str], prefix: str) -> list[dict[str, str]]:
            return [{"name": name, "ref": f"{prefix}{name}", "targetCommit": table[name]} for name in sorted(table)]

        payload = {
            "branches": refs(repo.branches, "refs/heads/"),
            "tags": refs(repo.tags, "refs/tags/"),
            "converts": [],
        }
        if req.flag("include_prs"):
            payload["pullRequests"] = refs(repo.pulls, "refs/pr/")
        return Reply.json(payload)

    def list_commits(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, _ = _split_revision(args)
        formatted = "formatted" in req.query.get("expand[]", []) + req.query.get("expand", [])
        items = []
        for commit in repo.history(repo.resolve(revision)):
            item = {
                "id": commit["id"],
                "title": commit["title"],
                "message": commit["message"],
                "authors": [{"user": author, "avatar": None} for author in commit["authors"]],
                "date": commit["date"],
            }
            if formatted:
                item["formatted"] = {"title": commit["title"], "message": commit["message"]}
            items.append(item)
        return self._paginate(req, items, self.page_size)

    # -- trees ----------------------------------------------------------------------------------------------------

    def list_tree(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, path_parts = _split_revision(args)
        path = "/".join(path_parts).strip("/")
        commit_id = repo.resolve(revision)
        files = repo.files(commit_id)
        prefix = f"{path}/" if path else ""
        if path and not any(name.startswith(prefix) for name in files):
            raise entry_not_found(path, revision, commit_id)
        dirs: set[str] = set()
        listed: list[str] = []
        for name in files:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            if req.flag("recursive"):
                dirs.update(prefix + "/".join(parts[:depth]) for depth in range(1, len(parts)))
                listed.append(name)
            elif len(parts) == 1:
                listed.append(name)
            else:
                dirs.add(prefix + parts[0])
        expand = req.flag("expand")
        items = [self._path_info(repo, commit_id, name, expand) for name in sorted(dirs) + sorted(listed)]
        return self._paginate(req, items, EXPANDED_PAGE_SIZE if expand else self.page_size)

    def paths_info(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, _ = _split_revision(args)
        if req.headers.get("content-type", "").startswith("application/json"):
            payload = req.json()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        commit_id = repo.resolve(revision)
        files = repo.files(commit_id)
        items = []
        for path in dict.fromkeys(str(p).strip("/") for p in paths):
            if path in files or any(name.startswith(f"{path}/") for name in files):
                items.append(self._path_info(repo, commit_id, path, expand))
        return Reply.json(items)

    def _path_info(self, repo: Repo, commit_id: str, path: str, expand: bool) -> dict[str, Any]:
        files = repo.files(commit_id)
        entry = files.get(path)
        if entry is None:
            info: dict[str, Any] = {"type": "directory", "oid": _folder_oid(files, path), "size": 0, "path": path}
        else:
            info = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointer_size"]}
        if expand:
            last = _last_change(repo, commit_id, path)
            info["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
            if entry is not None:
                info["securityFileStatus"] = {"status": "safe", "avScan": None, "pickleImportScan": None}
        return info

    def _paginate(self, req: HubRequest, items: list[Any], page_size: int) -> Reply:
        start = int(req.param("cursor") or 0)
        page = items[start : start + page_size]
        headers = {}
        if start + page_size < len(items):
            query = {key: values[-1] for key, values in req.query.items()}
            query["cursor"] = str(start + page_size)
            headers["Link"] = f'<{self.base_url()}{req.path}?{urlencode(query)}>; rel="next"'
        return Reply.json(page, headers=headers)

    # -- uploads --------------------------------------------------------------------------------------------------

    def preupload(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, _ = _split_revision(args)
        current = repo.files(repo.resolve(revision))
        answers = []
        for item in req.json().get("files", []):
            path = _validate_path(str(item.get("path", "")))
            sample = base64.b64decode(item.get("sample") or "")
            mode = _upload_mode(path, int(item.get("size") or 0), sample)
            answer = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            existing = current.get(path)
            if existing is not None and existing["lfs"] == (mode == "lfs"):
                answer["oid"] = existing["sha256"] if existing["lfs"] else existing["oid"]
            answers.append(answer)
        return Reply.json({"files": answers, "commitOid": repo.resolve(revision)})

    def lfs_batch(self, req: HubRequest, repo: Repo) -> Reply:
        payload = req.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = [self._lfs_object(str(obj.get("oid", "")), int(obj.get("size", 0))) for obj in payload["objects"]]
        return Reply.json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_object(self, oid: str, size: int) -> dict[str, Any]:
        if not _SHA256_RE.match(oid):
            return {"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid sha256 oid"}}
        if self.store.has_blob(oid) and self.store.blob_path(oid).stat().st_size == size:
            return {"oid": oid, "size": size}
        base = self.base_url()
        return {
            "oid": oid,
            "size": size,
            "authenticated": True,
            "actions": {
                "upload": {"href": f"{base}/_lfs/upload/{oid}?size={size}", "header": {}},
                "verify": {"href": f"{base}/_lfs/verify/{oid}", "header": {}},
            },
        }

    def _route_lfs_transfer(self, req: HubRequest, action: str, oid: str) -> Reply:
        if not _SHA256_RE.match(oid):
            raise HubError(400, f"Invalid LFS oid: {oid}")
        if action == "upload" and req.method == "PUT":
            if hashlib.sha256(req.body).hexdigest() != oid:
                raise HubError(400, "Uploaded content does not match the announced sha256")
            expected = req.param("size")
            if expected is not None and int(expected) != len(req.body):
                raise HubError(400, "Uploaded content does not match the announced size")
            self.store.put_blob(req.body)
            return Reply(200)
        if action == "verify" and req.method == "POST":
            size = req.json().get("size")
            if not self.store.has_blob(oid) or (size is not None and self.store.blob_path(oid).stat().st_size != size):
                raise HubError(404, f"LFS object {oid} not found", "EntryNotFound")
            return Reply.json({})
        raise self._unknown(req)

    def commit(self, req: HubRequest, repo: Repo, args: list[str]) -> Reply:
        revision, _ = _split_revision(args)
        header, operations = _parse_commit_payload(req.body)
        refs, ref_name, parent = self._commit_target(repo, revision, req.flag("create_pr"))
        expected_parent = header.get("parentCommit")
        if expected_parent and not parent.startswith(expected_parent):
            raise HubError(412, f"Parent commit {expected_parent} is not the head of {revision} ({parent})")
        files = dict(repo.files(parent))
        for key, value in operations:
            self._apply_operation(files, key, value, revision, parent)
        title = str(header.get("summary") or "Commit")
        commit_id = self.store.add_commit(repo, parent, files, title, str(header.get("description") or ""))
        refs[ref_name] = commit_id
        self.store.save(repo)
        base = f"{self.base_url()}/{repo.url_path}"
        pr_url = f"{base}/discussions/{ref_name}" if refs is repo.pulls else None
        logger.debug("Commit %s on %s %s@%s", commit_id, repo.repo_type, repo.repo_id, revision)
        return Reply.json(
            {
                "success": True,
                "commitOid": commit_id,
                "commitUrl": f"{base}/commit/{commit_id}",
                "pullRequestUrl": pr_url,
            }
        )

    @staticmethod
    def _commit_target(repo: Repo, revision: str, create_pr: bool) -> tuple[dict[str, str], str, str]:
        """The ref table and ref name the new commit will move, and the parent commit id.

        With `create_pr`, the ref is a new pull request `refs/pr/<n>` based on `revision`.
        """
        if create_pr:
            return repo.pulls, str(len(repo.pulls) + 1), repo.resolve(revision)
        name = revision.removeprefix("refs/heads/")
        if name in repo.branches:
            return repo.branches, name, repo.branches[name]
        number = revision.removeprefix("refs/pr/")
        if revision.startswith("refs/pr/") and number in repo.pulls:
            return repo.pulls, number, repo.pulls[number]
        repo.resolve(revision)  # raises RevisionNotFound for unknown revisions
        raise HubError(400, f"Cannot commit to {revision}: not a branch")

    def _apply_operation(
        self, files: dict[str, dict[str, Any]], key: str, value: dict[str, Any], revision: str, parent: str
    ) -> None:
        raw_path = str(value.get("path") or "")
        path = _validate_path(raw_path.rstrip("/") if key == "deletedFolder" else raw_path)
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else str(content).encode()
            files[path] = self.store.file_entry(data, lfs=False)
        elif key == "lfsFile":
            files[path] = self._uploaded_lfs_entry(path, str(value.get("oid", "")), value.get("size"))
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                message = f"A file with this name doesn't exist: {path}"
                raise HubError(404, message, "EntryNotFound", {"X-Repo-Commit": parent})
        elif key == "deletedFolder":
            inside = [name for name in files if name.startswith(f"{path}/")]
            if not inside:
                raise entry_not_found(path, revision, parent)
            for name in inside:
                del files[name]
        else:
            raise HubError(400, f"Unknown commit operation: {key}")

    def _uploaded_lfs_entry(self, path: str, oid: str, size: Any) -> dict[str, Any]:
        if not _SHA256_RE.match(oid) or not self.store.has_blob(oid):
            raise HubError(400, f"LFS object {oid} for {path} was not uploaded")
        actual = self.store.blob_path(oid).stat().st_size
        if size is not None and int(size) != actual:
            raise HubError(400, f"LFS object {oid} has size {actual}, not {size}")
        return self.store.lfs_entry(oid, actual)

    # -- downloads ------------------------------------------------------------------------------------------------

    def resolve_file(self, req: HubRequest, entry: dict[str, Any], commit_id: str) -> Reply:
        size = entry["size"]
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "X-Repo-Commit": commit_id,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size, 200
        range_header = req.headers.get("range")
        if range_header:
            byte_range = _parse_range(range_header, size)
            if byte_range is None:
                headers["Content-Range"] = f"bytes */{size}"
                return Reply(416, b"", headers)
            start, end, status = byte_range[0], byte_range[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if req.method == "HEAD":
            return Reply(status, b"", headers, content_length=end - start)
        return Reply(status, self.store.read_blob(entry["sha256"], start, end), headers)


def _card_tags(card: dict[str, Any] | None) -> list[str]:
    tags = (card or {}).get("tags")
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`[start, end)` of a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = match.groups()
    if not first:
        start, end = max(size - int(last), 0), size
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    return (start, end) if start < end else None


def _parse_commit_payload(body: bytes) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Header value and `(key, value)` operations of an NDJSON commit payload."""
    header: dict[str, Any] | None = None
    operations = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid NDJSON line in commit payload: {err}") from err
        if item.get("key") == "header":
            header = item.get("value") or {}
        else:
            operations.append((str(item.get("key")), item.get("value") or {}))
    if header is None:
        raise HubError(400, "Commit payload has no header line")
    return header, operations


def _folder_oid(files: dict[str, dict[str, Any]], path: str) -> str:
    prefix = f"{path}/"
    listing = "\n".join(f"{name}:{entry['oid']}" for name, entry in sorted(files.items()) if name.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


def _subtree_signature(files: dict[str, dict[str, Any]], path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, entry["oid"]) for name, entry in sorted(files.items()) if name == path or name.startswith(f"{path}/")
    )


def _last_change(repo: Repo, commit_id: str, path: str) -> dict[str, Any]:
    """The newest commit (reachable from `commit_id`) that changed `path` or anything below it."""
    history = repo.history(commit_id)
    for commit, parent in zip(history, history[1:] + [None]):
        before = _subtree_signature(parent["files"], path) if parent else ()
        if _subtree_signature(commit["files"], path) != before:
            return commit
    return history[-1]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: LocalHub):
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _HubRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("LocalHub: error while serving %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Close kept-alive client connections, so that a stopped server answers nothing more."""
        with self.connections_lock:
            for connection in self.connections:
                _shutdown(connection)


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("LocalHub %s - " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        req = HubRequest.parse(self.command, self.path, dict(self.headers.items()), self._read_body())
        reply = self.server.hub.process(req)
        if reply is None:
            self.close_connection = True
            _shutdown(self.connection)
        else:
            self._write(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        length = reply.content_length if reply.content_length is not None else len(reply.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)


def _shutdown(connection: socket.socket) -> None:
    """Close a client connection at once, without sending anything more."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class LocalHub:
    """A Hub-compatible HTTP server on a loopback port, storing repositories under `root_dir`.

    Example::

        with LocalHub(tmp_path) as hub:
            os.environ["HF_ENDPOINT"] = hub.url  # before importing huggingface_hub
            hub.inject_fault(r"/commit/", method="POST", status=500)  # next commit fails once
    """

    def __init__(self, root_dir: Path | str, host: str = "127.0.0.1", port: int = 0, page_size: int = PAGE_SIZE):
        self.root_dir = Path(root_dir)
        self.host = host
        self.port = port
        self.store = HubStore(self.root_dir)
        self._app = HubApp(self.store, lambda: self.url, page_size=page_size)
        self._server: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[FaultRule] = []
        self._requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        if self._server is not None:
            return self
        self._server = _HubHTTPServer((self.host, self.port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        logger.info("LocalHub serving %s from %s", self.url, self.root_dir)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- fault injection ------------------------------------------------------------------------------------------

    def inject_fault(
        self,
        path: str,
        *,
        method: str | None = None,
        action: str = "error",
        status: int = 500,
        nth: int = 1,
        times: int = 1,
    ) -> FaultRule:
        """Fail the `nth` (1-based) .. `nth + times - 1` requests matching `method` and the `path` regex.

        `path` is searched (`re.search`) in the raw, still percent-encoded URL path without the query string.
        `action`: ``"error"`` answers HTTP `status` without processing the request; ``"drop"`` closes the
        connection without answering or processing; ``"drop_after"`` processes the request, then closes the
        connection without answering. Returns the rule; its `seen` and `fired` counters show what happened.
        """
        if action not in ("error", "drop", "drop_after"):
            raise ValueError(f"Unknown fault action: {action}")
        rule = FaultRule(re.compile(path), method.upper() if method else None, action, status, nth, times)
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def process(self, req: HubRequest) -> Reply | None:
        """Record and answer one request, applying the first matching fault; None means: drop the connection."""
        record = RequestRecord(req.method, req.path, req.query, req.authorized)
        with self._lock:
            self._requests.append(record)
            fault = next((rule for rule in self._faults if rule.check(req.method, req.path)), None)
        record.fault = fault.action if fault is not None else None
        if fault is not None and fault.action == "error":
            reply = Reply.json({"error": f"Injected fault on {req.method} {req.path}"}, fault.status)
        elif fault is not None and fault.action == "drop":
            return None
        else:
            reply = self._app.handle(req)
            if fault is not None:  # "drop_after": processed, but the answer is lost
                return None
        record.status = reply.status
        return reply

    # -- introspection --------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests served so far (oldest first, at most the last 10 000)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored state of a repository (raises `HubError` if it does not exist)."""
        with self.store.lock:
            return self.store.get(repo_type, repo_id)

    def repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{quote(repo_id)}"
