"""A real OpenAI-compatible teacher on the loopback: `transformers serve` (extra `vstar[serve]`) serving a local
model directory, for tests and demos of the endpoint backend.

The server runs as its own process (`python -m transformers.cli.transformers serve MODEL_DIR`), pinned to the one
model (loaded before it answers, never unloaded), on CPU, on 127.0.0.1 and a free port, with the Hub switched off
(`HF_HUB_OFFLINE=1`, no update check): nothing is downloaded. `serve_model` returns once `/health` answers and
`/v1/models` lists the model, and stops the server (SIGTERM, then SIGKILL) on exit.

```python
from vstar.testing.serve import serve_model
from vstar.testing.tiny_models import build_tiny_vlm

with serve_model(build_tiny_vlm("/tmp/tiny-vlm")) as server:
    settings = GenerationSettings(backend="endpoint", endpoint_url=server.base_url)
    backend = get_backend(settings, server.model)
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServedModel:
    """A running `transformers serve`.

    Args:
        model: the model name requests must carry (the directory, exactly as the server was given it).
        base_url: the OpenAI base URL, `http://127.0.0.1:<port>/v1`.
        process: the server process.
        log_path: the server's stdout and stderr.
    """

    model: str
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


# The server is on the loopback: never through a proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, timeout: float = 2.0):
    with _OPENER.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def _ready(server: ServedModel) -> bool:
    try:
        if _get_json(server.base_url.removesuffix("/v1") + "/health").get("status") != "ok":
            return False
        return any(m.get("id") == server.model for m in _get_json(server.base_url + "/models").get("data", []))
    except (OSError, ValueError, urllib.error.URLError):
        return False


def stop_server(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a server process: SIGTERM (uvicorn shuts down gracefully), SIGKILL if it has not exited by `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def serve_model(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 180.0,
    extra_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    log_dir: str | Path | None = None,
) -> Iterator[ServedModel]:
    """Run `transformers serve` on a local model directory for the duration of the block.

    Args:
        model_dir: a model directory with its processor (e.g. `build_tiny_vlm`'s).
        host: the address to listen on (loopback by default).
        port: the port (default: a free one).
        startup_timeout: seconds to wait for the model to be loaded and the server to answer.
        extra_args: more `transformers serve` flags (e.g. `("--continuous-batching",)`).
        env: extra environment variables for the server.
        log_dir: where the server's log goes (default: a temporary folder, removed afterwards).

    Raises:
        RuntimeError: when the server exits or is not ready in time (with the end of its log).
    """
    port = port or free_port(host)
    model = str(model_dir)
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        "warning",
        *extra_args,
    ]
    child_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **(env or {}),
    }
    with contextlib.ExitStack() as stack:
        folder = Path(log_dir) if log_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log_path = folder / f"transformers-serve-{port}.log"
        log_file = stack.enter_context(log_path.open("wb"))
        logger.info("Starting transformers serve for %s on %s:%d", model, host, port)
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
        server = ServedModel(model, f"http://{host}:{port}/v1", process, log_path)
        try:
            started = time.monotonic()
            while not _ready(server):
                if process.poll() is not None:
                    raise RuntimeError(f"transformers serve exited with status {process.returncode}:\n{server.log()}")
                if time.monotonic() - started > startup_timeout:
                    raise RuntimeError(f"transformers serve not ready after {startup_timeout:g} s:\n{server.log()}")
                time.sleep(0.25)
            logger.info("transformers serve ready at %s after %.1f s", server.base_url, time.monotonic() - started)
            yield server
        finally:
            stop_server(process)
