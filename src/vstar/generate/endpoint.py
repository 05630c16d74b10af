"""The endpoint backend: any OpenAI-compatible chat-completions server as the teacher (GPT-4o-class APIs, a vLLM
or `transformers serve` server), the sampled frames sent as images.

Each request becomes one chat completion: an optional system message, then a user message holding the clip's
sampled frames (`sample_clip`, so the same frames the local backends see) as `image_url` parts with JPEG or PNG
data URLs, then the prompt; a text-only request sends the prompt alone. Up to `max_concurrency` requests are in
flight at once (one batch of `batch_size` at a time, so keep `batch_size` at least `max_concurrency`).

Failures: 429, 5xx, timeouts and dropped connections are retried `max_retries` times with exponential backoff and
jitter, waiting at least what a `Retry-After` header asks; any other 4xx is not retried. A request that still
fails is skipped and listed with its kind and reason (`read_skipped`), never fatal to the pass, and asked again by
the next run.

The API key is read from the environment variable named by `api_key_env` (default `OPENAI_API_KEY`; none is sent
when it is unset, as local servers need none). It is sent only in the `Authorization` header: never in the
generation key, the answers, the logs or an error. A URL with credentials in it is refused for the same reason
(the URL is saved with the run's config).

```bash
export OPENAI_API_KEY=...   # or the variable named by --api_key_env
vstar generate --model gpt-4o --backend endpoint --endpoint_url https://api.openai.com/v1 --max_concurrency 16 \
    --dataset runs/k700/source --task action_recognition --output_dir runs/gen --video_fps 1
# a local teacher: transformers serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000
vstar generate --model Qwen/Qwen2.5-VL-7B-Instruct --backend endpoint --endpoint_url http://localhost:8000/v1 ...
```
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np

from vstar.errors import ConfigError
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    RequestFailed,
    distinct_prompts,
    max_new_tokens,
    sample_clip,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
JPEG_QUALITY = 90
# Query parameters that carry credentials in some APIs' URLs (`?key=`, `?api_key=`, SAS `sig=`...).
SECRET_QUERY_WORDS = ("key", "token", "secret", "sig", "password", "auth")
# How much of a server's error body a reason quotes.
REASON_CHARS = 300


def public_url(url: str) -> str:
    """The base URL as it may be written and logged: scheme, host, port and path, without query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_endpoint_url(url: str | None, api_key_env: str) -> str:
    """The chat-completions URL for a base URL (`http://host:8000/v1`, or the full `.../chat/completions`).

    Args:
        url: the `endpoint_url` setting.
        api_key_env: the variable the key belongs in (named in the error for a URL holding credentials).

    Raises:
        ConfigError: when the URL is missing, not http(s), or holds credentials (user:password@ or a key in the
            query).
    """
    if not url:
        raise ConfigError("The endpoint backend needs --endpoint_url, e.g. http://localhost:8000/v1.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--endpoint_url must be an http(s) URL such as http://localhost:8000/v1, not {url!r}.")
    secret_query = [name for name, _ in parse_qsl(parts.query) if any(w in name.lower() for w in SECRET_QUERY_WORDS)]
    if parts.username or parts.password or secret_query:
        # Never echo the URL itself here: it holds the secret.
        raise ConfigError(
            f"--endpoint_url {public_url(url)} carries credentials; the URL is saved with the run, so put the key "
            f"in the environment variable {api_key_env} (see --api_key_env) instead."
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def image_data_url(frame: np.ndarray, image_format: str = "jpeg") -> str:
    """One RGB frame as a `data:image/...;base64,` URL.

    Args:
        frame: uint8 array `(height, width, 3)`.
        image_format: `jpeg` (smaller) or `png` (lossless).
    """
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(frame))
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    return f"data:{IMAGE_FORMATS[image_format]};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def chat_body(
    model: str,
    request: GenerationRequest,
    settings: GenerationSettings,
    frames: np.ndarray | Sequence[str] | None = None,
) -> dict[str, Any]:
    """The chat-completions request body for one request.

    Args:
        model: the model name the server knows.
        request: the request (its prompt, system prompt and answer limit).
        settings: `max_new_tokens`, `temperature`, `top_p`, `seed`, `image_format`.
        frames: the clip's sampled frames, or their `image_data_url`s (encoded once for the samples of a prompt),
            or `None` for a text-only request.
    """
    content: list[dict[str, Any]] = []
    if frames is not None:
        urls = [f if isinstance(f, str) else image_data_url(f, settings.image_format) for f in frames]
        content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    content.append({"type": "text", "text": request.prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if request.system is not None:
        messages.insert(0, {"role": "system", "content": request.system})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_new_tokens(request, settings),
        "temperature": max(settings.temperature, 0.0),
        # Several samples of one prompt must not share a seed, or a seeded server gives one answer n times.
        "seed": settings.seed + getattr(request, "sample", 0),
    }
    if settings.temperature > 0:
        body["top_p"] = settings.top_p
    return body


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (a number of seconds or an HTTP date), or `None`."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


@dataclass
class EndpointBatch:
    """A prepared batch: the requests and their request bodies, in the same order."""

    requests: list[GenerationRequest]
    bodies: list[dict[str, Any]]


@BACKENDS.register("endpoint")
class EndpointBackend(GenerationBackend):
    """Generation through an OpenAI-compatible chat-completions server.

    Args:
        model: the model name the server serves (e.g. `gpt-4o`, or the id a vLLM / `transformers serve` server
            was started with).
        adapter: not supported (the server decides the weights); must be `None`.
        settings: the generation settings, including the `endpoint:` ones (`endpoint_url`, `api_key_env`,
            `max_concurrency`, `request_timeout`, `max_retries`, `image_format`).
        backoff: seconds before the first retry; each retry waits twice as long (with jitter), up to
            `max_backoff`, and never less than a `Retry-After` header asks.
        max_backoff: the longest wait between two tries, in seconds.

    Raises:
        ConfigError: for a missing or credential-bearing `endpoint_url`, an adapter, or an unknown `image_format`.
    """

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        settings: GenerationSettings | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        **_: Any,
    ):
        self.settings = settings or GenerationSettings(backend="endpoint")
        if adapter:
            raise ConfigError(
                "The endpoint backend cannot apply an adapter: the server decides the weights. Serve the adapted "
                "model (e.g. vLLM's --lora-modules) and pass its name as the model."
            )
        if self.settings.image_format not in IMAGE_FORMATS:
            raise ConfigError(
                f"image_format must be one of {', '.join(IMAGE_FORMATS)}, not {self.settings.image_format!r}."
            )
        self.url = check_endpoint_url(self.settings.endpoint_url, self.settings.api_key_env)
        self.base_url = public_url(self.settings.endpoint_url)
        self.backoff, self.max_backoff = backoff, max_backoff
        self.generator = f"endpoint:{model}@{self.base_url}"
        self.model_name, self.adapter_name = model, None
        self.model = model
        # The answers depend on the served model and on how frames are sent, not on which host serves it.
        self._vstar_identity = {
            "model": model,
            "model_revision": weights_fingerprint(model) if Path(model).is_dir() else None,
            "adapter": None,
            "adapter_revision": None,
            "image_format": self.settings.image_format,
        }
        self._api_key = os.environ.get(self.settings.api_key_env) or None
        if self._api_key is None:
            logger.info(
                "No API key in $%s: sending requests to %s without one.", self.settings.api_key_env, self.base_url
            )
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._senders = ThreadPoolExecutor(
            max_workers=max(self.settings.max_concurrency, 1), thread_name_prefix="vstar-endpoint"
        )
        workers = self.settings.decode_workers
        self._decoders = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vstar-decode") if workers else None
        )

    # -- preparing ----------------------------------------------------------------------------------------------
    def _image_urls(self, request: GenerationRequest) -> list[str] | None:
        if request.text_only:
            return None
        return [
            image_data_url(frame, self.settings.image_format) for frame in sample_clip(request, self.settings).frames
        ]

    def prepare(self, requests: Sequence[GenerationRequest]) -> EndpointBatch:
        requests = list(requests)
        # Samples of one prompt (`GenerationRequest.sample`) share one decoded and encoded clip.
        distinct, owners = distinct_prompts(requests)
        images = list(self._decoders.map(self._image_urls, distinct)) if self._decoders else [
            self._image_urls(r) for r in distinct
        ]  # fmt: skip
        bodies = [chat_body(self.model, r, self.settings, images[owner]) for r, owner in zip(requests, owners)]
        return EndpointBatch(requests, bodies)

    # -- sending ------------------------------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            client = httpx.Client(timeout=self.settings.request_timeout, headers=headers)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        time.sleep(delay)

    def _try(self, body: dict[str, Any]) -> tuple[str | RequestFailed, bool, float | None]:
        """(answer or failure, whether to retry, seconds the server asked to wait) for one try."""
        import httpx

        try:
            response = self._client().post(self.url, json=body)
        except httpx.TimeoutException:
            return RequestFailed("timeout", f"no answer within {self.settings.request_timeout:g} s"), True, None
        except httpx.TransportError as error:
            return RequestFailed("connection_error", f"{type(error).__name__}: {error}"), True, None
        status = response.status_code
        if status == 200:
            try:
                content = response.json()["choices"][0]["message"].get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                reason = f"HTTP 200 without a chat completion: {response.text[:REASON_CHARS]!r}"
                return RequestFailed("bad_response", reason, status), False, None
            return (content or "").strip(), False, None
        reason = f"HTTP {status}: {' '.join(response.text.split())[:REASON_CHARS]}"
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429:
            return RequestFailed("rate_limited", reason, status), True, retry_after
        if status >= 500:
            return RequestFailed("server_error", reason, status), True, retry_after
        return RequestFailed("client_error", reason, status), False, None

    def _send(self, body: dict[str, Any]) -> str | RequestFailed:
        tries = self.settings.max_retries + 1
        for attempt in range(tries):
            answer, retry, retry_after = self._try(body)
            if not isinstance(answer, RequestFailed):
                return answer
            answer.reason = self._redact(answer.reason)
            if not retry or attempt == tries - 1:
                if retry:
                    answer.reason += f" (gave up after {tries} tries)"
                return answer
            logger.debug("%s: %s; retrying (try %d of %d)", self.base_url, answer.reason, attempt + 2, tries)
            self._wait(attempt, retry_after)
        raise AssertionError("unreachable")

    def generate_prepared(self, prepared: EndpointBatch) -> list[str | RequestFailed]:
        return list(self._senders.map(self._send, prepared.bodies))

    def close(self) -> None:
        """Close the HTTP connections and the worker threads; the backend is not used afterwards."""
        self._senders.shutdown()
        if self._decoders:
            self._decoders.shutdown()
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        super().close()

    def __repr__(self) -> str:  # never the key
        return f"EndpointBackend({self.model!r}, {self.base_url!r})"
