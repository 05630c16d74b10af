"""Pytest plugin: a loopback Hugging Face Hub (`vstar.testing.hub_server.LocalHub`) for the whole test session.

`huggingface_hub`, `datasets` and `transformers` copy `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_DISABLE_XET`, ... into
module constants when they are first imported. This module therefore sets the environment *at import time*, before
any of them is imported:

* ``HF_ENDPOINT`` -> ``http://127.0.0.1:<port>``, a free port picked now; the server itself is started on that port
  by the session-scoped `local_hub` fixture;
* ``HF_TOKEN`` -> ``hf_test_token`` (the server accepts any bearer token);
* ``HF_HOME`` -> a fresh temporary directory (caches, token file), removed at exit;
* ``HF_HUB_DISABLE_XET=1`` (the server speaks the plain LFS protocol), ``HF_HUB_DISABLE_TELEMETRY=1``,
  ``HF_UPDATE_DOWNLOAD_COUNTS=0`` and ``HF_HUB_DISABLE_UPDATE_CHECK=1`` (no traffic outside the loopback server);
* ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are removed: offline mode would block the
  loopback server too.

It must be imported before anything imports those libraries: ``pytest -p hub_fixtures`` (with the tests directory
on ``sys.path``, e.g. ``PYTHONPATH=tests:src``) or ``pytest_plugins = ["hub_fixtures"]`` in the root ``conftest.py``.
Pytest imports a conftest module completely before loading its ``pytest_plugins``: if that conftest imports the
Hugging Face libraries (or project modules using them) at module level, put ``import hub_fixtures  # noqa: F401``
before those imports. If a library was imported earlier anyway, its endpoint constants are patched and a warning is
emitted (its default cache paths cannot be redirected that late; `hub_env` still gives per-test caches).

Fixtures:

* `local_hub` (session): the running `LocalHub`; also sets ``datasets.config.USE_PARQUET_EXPORT = False`` so that
  `load_dataset` does not ask the (absent) dataset viewer for Parquet exports.
* `hub_env` (function): re-applies the environment with `monkeypatch`, points the Hub and `datasets` caches at fresh
  per-test directories and returns a `HubEnv` with the endpoint, token, server and an `HfApi` client.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from vstar.testing.hub_server import LocalHub

HUB_HOST = "127.0.0.1"
HUB_TOKEN = "hf_test_token"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _twin_module() -> object | None:
    """This plugin already imported under its other name (`hub_fixtures` vs `tests.hub_fixtures`), if any."""
    for name in ("hub_fixtures", "tests.hub_fixtures"):
        module = sys.modules.get(name)
        if name != __name__ and module is not None and hasattr(module, "HUB_PORT"):
            return module
    return None


_twin = _twin_module()
if _twin is not None:  # one server and one HF_HOME per process, however the plugin is imported
    HUB_PORT, HF_HOME = _twin.HUB_PORT, _twin.HF_HOME
else:
    HUB_PORT = _free_port(HUB_HOST)
    HF_HOME = tempfile.mkdtemp(prefix="vstar-hf-home-")
    atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)
HUB_ENDPOINT = f"http://{HUB_HOST}:{HUB_PORT}"

HUB_ENV = {
    "HF_ENDPOINT": HUB_ENDPOINT,
    "HF_TOKEN": HUB_TOKEN,
    "HF_HOME": HF_HOME,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
}
# Variables that would override HF_HOME-derived paths, switch to another endpoint or block all traffic.
CLEARED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_XET_CACHE",
)


def _apply_environment() -> None:
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(HUB_ENV)


def _patch_imported_libraries() -> None:
    """Best effort when a Hugging Face library was imported before this plugin: redirect its endpoint constants."""
    hub_constants = sys.modules.get("huggingface_hub.constants")
    datasets_config = sys.modules.get("datasets.config")
    endpoints = {
        getattr(module, name, HUB_ENDPOINT)
        for module, name in ((hub_constants, "ENDPOINT"), (datasets_config, "HF_ENDPOINT"))
    }
    if endpoints == {HUB_ENDPOINT}:
        return
    warnings.warn(
        "hub_fixtures was loaded after huggingface_hub/datasets were imported; only the endpoint constants are "
        "redirected to the local Hub (caches may still point to the default HF_HOME). Load the plugin first.",
        stacklevel=2,
    )
    if hub_constants is not None:
        hub_constants.ENDPOINT = HUB_ENDPOINT
        hub_constants.HUGGINGFACE_CO_URL_TEMPLATE = HUB_ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
        hub_constants.HF_HUB_DISABLE_XET = True
        hub_constants.HF_HUB_OFFLINE = False
        hub_constants.HF_HUB_DISABLE_TELEMETRY = True
    if datasets_config is not None:
        datasets_config.HF_ENDPOINT = HUB_ENDPOINT
        datasets_config.HUB_DATASETS_URL = HUB_ENDPOINT + "/datasets/{repo_id}/resolve/{revision}/{path}"
        datasets_config.HF_HUB_OFFLINE = False
        datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = False


_apply_environment()
_patch_imported_libraries()


@dataclass
class HubEnv:
    """What a test needs to talk to the local Hub."""

    hub: LocalHub
    endpoint: str
    token: str
    hub_cache: Path
    datasets_cache: Path

    @property
    def api(self) -> HfApi:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """The loopback Hub, listening on `HUB_ENDPOINT` for the whole session."""
    import datasets.config

    from vstar.testing.hub_server import LocalHub

    datasets.config.USE_PARQUET_EXPORT = False
    hub = LocalHub(tmp_path_factory.mktemp("local-hub"), host=HUB_HOST, port=HUB_PORT)
    try:
        hub.start()
    except OSError as err:
        pytest.fail(f"Cannot start the local Hub on {HUB_ENDPOINT} (port taken since plugin import?): {err}")
    yield hub
    hub.stop()


@pytest.fixture
def hub_env(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubEnv]:
    """Client environment for one test: local endpoint and token, fresh Hub and `datasets` caches, no faults."""
    import datasets.config
    from huggingface_hub import constants

    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in HUB_ENV.items():
        monkeypatch.setenv(name, value)
    hub_cache, datasets_cache = tmp_path / "hf-hub-cache", tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", datasets_cache)
    monkeypatch.setattr(datasets.config, "USE_PARQUET_EXPORT", False)
    local_hub.clear_faults()
    yield HubEnv(local_hub, HUB_ENDPOINT, HUB_TOKEN, hub_cache, datasets_cache)
    local_hub.clear_faults()
