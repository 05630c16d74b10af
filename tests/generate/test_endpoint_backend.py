"""The endpoint backend against a real HTTP server on the loopback that fails the way teacher APIs do.

The server below answers chat completions for real (it reads the images it was sent and says how many), and, by
the prompt, fails: 429 with `Retry-After`, 5xx, 400, or an answer slower than the client's timeout. Those are
the failure modes under test, not a stand-in for the teacher (the teacher is `transformers serve`, in
test_endpoint_serve.py).
"""

import base64
import dataclasses
import io
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from vstar.errors import ConfigError
from vstar.generate import GenerationRequest, GenerationSettings, endpoint, get_backend, read_generations, read_skipped
from vstar.generate.base import generation_key, run_generation
from vstar.generate.endpoint import EndpointBackend, check_endpoint_url, retry_after_seconds
from vstar.io import load_split
from vstar.video import sample_frames

SECRET = "sk-test-0123456789abcdef-do-not-write"
KEY_ENV = "VSTAR_TEST_TEACHER_KEY"


class TeacherAPI(ThreadingHTTPServer):
    """Chat completions with scripted failures, chosen by the first word of the prompt.

    `ok`: 200. `slow`: 200 after `slow_seconds`. `limited`: 429 (`Retry-After: 1`) on the first try, then 200.
    `flaky`: 503 on the first try, then 200. `broken`: 500 every time. `refused`: 400 (the body quotes the
    request's Authorization header, as a careless server might). `fixed` mode answers everything with 200.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), TeacherHandler)
        self.lock = threading.Lock()
        self.tries: Counter = Counter()
        self.bodies: dict[str, dict] = {}
        self.auth: set[str | None] = set()
        self.in_flight = self.max_in_flight = 0
        self.slow_seconds = 0.3
        self.fixed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reset(self) -> None:
        with self.lock:
            self.tries.clear()
            self.bodies.clear()
            self.auth.clear()
            self.max_in_flight = 0
            self.slow_seconds = 0.3
            self.fixed = False


class TeacherHandler(BaseHTTPRequestHandler):
    server: TeacherAPI

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout)
            pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            return self.reply(404, {"error": f"no route {self.path}"})
        parts = body["messages"][-1]["content"]
        prompt = parts[-1]["text"]
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        with server.lock:
            server.tries[prompt] += 1
            tries = server.tries[prompt]
            server.bodies[prompt] = body
            server.auth.add(self.headers.get("Authorization"))
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            status, payload, headers = self.answer(prompt, tries, images, body)
        finally:
            # Before the reply goes out: a client that got its answer may send the next request at once.
            with server.lock:
                server.in_flight -= 1
        self.reply(status, payload, headers)

    def answer(self, prompt: str, tries: int, images: list[str], body: dict) -> tuple[int, dict, dict]:
        kind = "ok" if self.server.fixed else prompt.split()[0]
        if kind == "slow":
            time.sleep(self.server.slow_seconds)
        if kind == "limited" and tries == 1:
            return 429, {"error": "rate limit"}, {"Retry-After": "1"}
        if kind == "flaky" and tries == 1:
            return 503, {"error": "overloaded"}, {}
        if kind == "broken":
            return 500, {"error": "internal error"}, {}
        if kind == "refused":
            return 400, {"error": f"bad request from {self.headers.get('Authorization')}"}, {}
        sizes = {Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size for url in images}
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else None
        answer = f"{prompt} | {len(images)} images {sorted(sizes)} | max {body['max_tokens']} | system {system}"
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": f" {answer}\n"}}]}, {}


@pytest.fixture(scope="module")
def api():
    server = TeacherAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def teacher(api, monkeypatch):
    api.reset()
    monkeypatch.setenv(KEY_ENV, SECRET)
    return api


@pytest.fixture(scope="module")
def rows(shapes_dir):
    return list(load_split(str(shapes_dir), "test").select(range(4)))


def settings_for(api: TeacherAPI, **overrides) -> GenerationSettings:
    values = dict(
        backend="endpoint",
        endpoint_url=api.url,
        api_key_env=KEY_ENV,
        batch_size=8,
        chunk_size=4,
        num_frames=4,
        max_new_tokens=16,
        max_concurrency=4,
        max_retries=2,
        request_timeout=5.0,
        decode_workers=2,
    )
    return GenerationSettings(**{**values, **overrides})


def backend_for(settings: GenerationSettings) -> EndpointBackend:
    backend = get_backend(settings, "teacher-model")
    backend.backoff = 0.01  # retries in tests wait what the server asks, not seconds of backoff
    return backend


def test_frames_go_as_images_and_text_requests_as_text(teacher, rows, tmp_path, monkeypatch):
    settings = settings_for(teacher, image_format="png")
    requests = [
        GenerationRequest(r["id"], "clip", "Q", f"ok clip {i}", r["video"], 0.0, 0.5) for i, r in enumerate(rows)
    ]
    requests += [
        GenerationRequest("summary-0", "summary", "", "ok summary 0", system="Be brief.", max_new_tokens=5),
        GenerationRequest("summary-1", "summary", "", "ok summary 1"),
    ]
    backend = backend_for(settings)
    assert backend.generator == f"endpoint:teacher-model@{teacher.url}"
    assert run_generation(requests, backend, tmp_path, "teach", settings, 0, 1) == 6
    answers = {(r["id"], r["attempt"]): r["answer"] for r in read_generations(tmp_path, "teach")}
    for request in requests[:4]:
        assert (
            answers[(request.id, request.attempt)] == f"{request.prompt} | 4 images [(64, 64)] | max 16 | system None"
        )
    assert answers[("summary-0", "summary")] == "ok summary 0 | 0 images [] | max 5 | system Be brief."
    assert answers[("summary-1", "summary")] == "ok summary 1 | 0 images [] | max 16 | system None"
    assert teacher.auth == {f"Bearer {SECRET}"}
    # The frames sent are the sampled frames, pixel for pixel (PNG), in order.
    body = teacher.bodies["ok clip 2"]
    sent = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    clip = sample_frames(rows[2]["video"], num_frames=4, start=0.0, end=0.5)
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).convert("RGB")) for u in sent]
    assert all(u.startswith("data:image/png;base64,") for u in sent)
    assert np.array_equal(np.stack(decoded), clip.frames)
    assert body["model"] == "teacher-model" and body["temperature"] == 0.0 and body["seed"] == 0
    assert "top_p" not in body  # greedy
    jpeg = backend_for(settings_for(teacher)).prepare(requests[:1]).bodies[0]["messages"][0]["content"][0]
    assert jpeg["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # Samples of one prompt get their own seeds.
    again = GenerationRequest("summary-1", "summary", "", "ok summary 1")
    again.sample = 2
    assert [b["seed"] for b in backend.prepare([requests[-1], again]).bodies] == [0, 2]
    # ... and share one decoded, encoded clip: the same images, decoded once.
    samples = [dataclasses.replace(requests[0], sample=k) for k in range(3)]
    decoded_ids = []
    real = endpoint.sample_clip
    monkeypatch.setattr(endpoint, "sample_clip", lambda r, s: decoded_ids.append(r.id) or real(r, s))
    bodies = backend.prepare([*samples, requests[1]]).bodies
    assert decoded_ids == [requests[0].id, requests[1].id]
    assert [b["seed"] for b in bodies] == [0, 1, 2, 0]
    images = [[p for p in b["messages"][0]["content"] if p["type"] == "image_url"] for b in bodies]
    assert images[0] == images[1] == images[2] != images[3]


def test_concurrency_is_limited(teacher, tmp_path):
    settings = settings_for(teacher, max_concurrency=3, batch_size=12, chunk_size=12)
    requests = [GenerationRequest(f"t{i:02d}", "summary", "", f"slow {i}") for i in range(12)]
    started = time.monotonic()
    assert run_generation(requests, backend_for(settings), tmp_path, "slow", settings, 0, 1) == 12
    elapsed = time.monotonic() - started
    assert teacher.max_in_flight == 3  # reached, never exceeded
    assert elapsed >= 4 * teacher.slow_seconds * 0.9  # 12 requests, 3 at a time


def test_failures_are_retried_or_reported_and_asked_again(teacher, tmp_path, caplog):
    teacher.slow_seconds = 1.5
    settings = settings_for(teacher, request_timeout=0.3, max_retries=2, chunk_size=3, batch_size=3)
    prompts = ["ok a", "limited b", "flaky c", "broken d", "refused e", "slow f", "ok g"]
    requests = [GenerationRequest(f"r{i}", "summary", "", p) for i, p in enumerate(prompts)]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vstar.generate.base"):
        assert run_generation(requests, backend_for(settings), tmp_path, "teach", settings, 0, 1) == 4
    elapsed = time.monotonic() - started
    answered = {r["prompt"] for r in read_generations(tmp_path, "teach")}
    assert answered == {"ok a", "limited b", "flaky c", "ok g"}
    assert elapsed >= 1.0  # the 429 asked for a second, and got it
    # Retried: 429, 5xx and timeouts (up to 1 + max_retries tries); a 400 is not.
    assert teacher.tries == Counter(
        {"ok a": 1, "limited b": 2, "flaky c": 2, "broken d": 3, "refused e": 1, "slow f": 3, "ok g": 1}
    )
    skipped = {s["id"]: s for s in read_skipped(tmp_path, "teach")}
    assert set(skipped) == {"r3", "r4", "r5"}
    assert (skipped["r3"]["kind"], skipped["r3"]["status"]) == ("server_error", 500)
    assert "HTTP 500" in skipped["r3"]["error"] and "gave up after 3 tries" in skipped["r3"]["error"]
    assert (skipped["r4"]["kind"], skipped["r4"]["status"]) == ("client_error", 400)
    assert "HTTP 400" in skipped["r4"]["error"] and "gave up" not in skipped["r4"]["error"]
    assert (skipped["r5"]["kind"], skipped["r5"]["status"]) == ("timeout", None)
    assert all(s["video"] is None for s in skipped.values())
    assert "3 of 7 requests could not be answered" in caplog.text
    assert sum("Skipping request" in line for line in caplog.text.splitlines()) == 3

    # The server recovers: the next run asks only the three that failed.
    teacher.reset()
    teacher.fixed = True
    assert run_generation(requests, backend_for(settings), tmp_path, "teach", settings, 0, 1) == 3
    assert set(teacher.tries) == {"broken d", "refused e", "slow f"}
    assert len(read_generations(tmp_path, "teach")) == 7 and read_skipped(tmp_path, "teach") == []
    assert not (tmp_path / "teach-skipped-rank000.json").exists()


def test_an_unreachable_server_is_reported_per_request(monkeypatch, tmp_path):
    from vstar.testing.serve import free_port

    monkeypatch.setenv(KEY_ENV, SECRET)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = GenerationSettings(backend="endpoint", endpoint_url=url, api_key_env=KEY_ENV, max_retries=1)
    requests = [GenerationRequest("a", "summary", "", "ok a"), GenerationRequest("b", "summary", "", "ok b")]
    requests.append(GenerationRequest("c", "clip", "", "ok c", str(tmp_path / "gone.mp4")))  # never sent
    assert run_generation(requests, backend_for(settings), tmp_path, "teach", settings, 0, 1) == 0
    kinds = {s["id"]: s["kind"] for s in read_skipped(tmp_path, "teach")}
    assert kinds == {"a": "connection_error", "b": "connection_error", "c": "unreadable_clip"}


def test_the_key_is_never_written_or_logged(teacher, rows, tmp_path, caplog):
    settings = settings_for(teacher, max_retries=1)
    requests = [GenerationRequest(rows[0]["id"], "clip", "Q", "ok clip", rows[0]["video"])]
    requests += [GenerationRequest("x", "summary", "", "refused x"), GenerationRequest("y", "summary", "", "broken y")]
    backend = backend_for(settings)
    with caplog.at_level(logging.DEBUG):
        run_generation(requests, backend, tmp_path, "teach", settings, 0, 1)
        # A URL with credentials in it is refused without repeating them.
        for url in (f"http://user:{SECRET}@127.0.0.1:1/v1", f"https://api.example.com/v1?api_key={SECRET}"):
            with pytest.raises(ConfigError, match=KEY_ENV) as info:
                EndpointBackend("m", settings=settings_for(teacher, endpoint_url=url))
            assert SECRET not in str(info.value)
    assert teacher.auth == {f"Bearer {SECRET}"}  # it was sent
    refused = next(s for s in read_skipped(tmp_path, "teach") if s["id"] == "x")
    assert refused["error"] == 'HTTP 400: {"error": "bad request from Bearer ***"}'  # the server echoed it
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {".parquet", ".json"}
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    logged = caplog.text + "".join(str(r.args) + str(r.__dict__) for r in caplog.records)
    assert caplog.records and SECRET not in logged
    assert SECRET not in json.dumps(generation_key(backend, settings, requests)) + repr(backend) + backend.generator


def test_endpoint_settings_are_checked_and_key_the_answers(teacher):
    with pytest.raises(ConfigError, match="needs --endpoint_url"):
        EndpointBackend("m", settings=GenerationSettings(backend="endpoint"))
    with pytest.raises(ConfigError, match="http"):
        EndpointBackend("m", settings=settings_for(teacher, endpoint_url="ftp://host/v1"))
    with pytest.raises(ConfigError, match="adapter"):
        EndpointBackend("m", adapter="some/adapter", settings=settings_for(teacher))
    with pytest.raises(ConfigError, match="image_format"):
        EndpointBackend("m", settings=settings_for(teacher, image_format="webp"))
    assert check_endpoint_url("http://h:8000/v1/", "K") == "http://h:8000/v1/chat/completions"
    assert check_endpoint_url("http://h/v1/chat/completions", "K") == "http://h/v1/chat/completions"
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait

    requests = [GenerationRequest("a", "summary", "", "ok a")]
    key = generation_key(EndpointBackend("m", settings=settings_for(teacher)), settings_for(teacher), requests)
    assert (key["model"], key["model_revision"], key["adapter"], key["image_format"]) == ("m", None, None, "jpeg")
    # Another host serving the same model keeps the answers; another image encoding does not.
    moved = settings_for(teacher, endpoint_url="http://localhost:9/v1")
    assert generation_key(EndpointBackend("m", settings=moved), moved, requests) == key
    png = settings_for(teacher, image_format="png")
    assert generation_key(EndpointBackend("m", settings=png), png, requests)["image_format"] == "png"


def test_vstar_generate_with_an_endpoint_teacher(teacher, shapes_dir, tmp_path, caplog):
    from vstar.cli import main

    out = tmp_path / "gen"
    command = ["generate", "--model", "teacher-model", "--backend", "endpoint", "--endpoint_url", teacher.url,
               "--api_key_env", KEY_ENV, "--max_concurrency", "2", "--num_frames", "3", "--output_dir", str(out),
               "--dataset", str(shapes_dir), "--split", "test", "--task", "shapes", "--limit", "5"]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        main(command)
    answers = read_generations(out, "direct")
    assert len(answers) == 5 and sum(teacher.tries.values()) == 5
    assert all(a["answer"].endswith("| 3 images [(64, 64)] | max 256 | system None") for a in answers)
    assert {a["generator"] for a in answers} == {f"endpoint:teacher-model@{teacher.url}"}
    main(command)  # resumed: nothing asked again
    assert sum(teacher.tries.values()) == 5
    for path in out.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
