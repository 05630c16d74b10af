"""Batched generation (16 prompts per `generate` call) against one prompt at a time, the official Video-STaR way;
and one pass asking 4 samples per clip against four passes of one sample.

Run: `PYTHONPATH=src python bench/bench_generation.py [--quick] [--only batched|samples] [--requests 64]
[--repeats 3]`; the ratios are also written to `bench/results.json`: `generation_batched_vs_single` = seconds with
batch 1 / seconds with batch 16, and `generation_4samples_vs_4passes` = seconds of four passes of one sample per
clip / seconds of one pass of 4 samples per clip (`build_requests(num_samples=4)`).

Generating answers for every clip, then again with hints for the failures, is the loop's most expensive stage
after training. Both settings run the real stage: `run_generation` with the `TransformersBackend` (clips decoded
by `vstar.video` in background threads, left-padded batches, chunk files written to a temporary directory) on the
same tiny Qwen2.5-VL (built offline, tokenizer trained on the shapes demo's texts), the same direct prompts about
the same shapes clips, greedy decoding. A random tiny model may emit its end-of-turn token after a few tokens, and
a batch runs until its longest answer ends, so the two settings would generate different numbers of tokens: here
end-of-turn and padding tokens are suppressed until `max_new_tokens` (`min_new_tokens = max_new_tokens`), so every
answer is exactly that long in both settings (the script checks the count). Torch runs on one thread in both
settings (a second thread contending with a busy core slows CPU runs down a lot), and the settings take turns so load
from other processes spreads over both; the median is compared.

Samples: both settings answer the same clips 4 times at temperature 1.0 with 16 prompts per `generate` call, the
same number of tokens each (as above). Four passes decode every clip, run the processor on it, encode its video and
prefill its prompt four times, in calls of 16 answers; one pass of 4 samples does all of that once per clip (the
transformers backend collapses the samples of one prompt in `prepare`, prefills each distinct prompt once and copies
its KV cache per sample) and answers a prompt's samples in the same call (16 prompts, 64 answers), which is what
`num_samples_per_clip` saves a cycle.
`--quick` runs 16 short requests once to check that everything runs; it records nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from results import record

from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    build_requests,
    read_generations,
    run_generation,
)
from vstar.generate.hf import TransformersBackend


class FixedLengthBackend(TransformersBackend):
    """The transformers backend with every answer exactly `max_new_tokens` long, counting what it generates."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.model.generation_config
        config.min_new_tokens = self.settings.max_new_tokens
        self.stop_ids = torch.tensor([config.pad_token_id, *torch.tensor(config.eos_token_id).flatten().tolist()])
        self.generated_tokens = 0
        generate = self.model.generate

        def counting_generate(**inputs):
            output = generate(**inputs)
            new = output[:, inputs["input_ids"].shape[1] :]
            self.generated_tokens += int((~torch.isin(new, self.stop_ids)).sum())
            return output

        self.model.generate = counting_generate


def build_model_and_clips(root: Path, num_clips: int) -> tuple[Path, list[dict]]:
    """A tiny model and the train rows of `num_clips` shapes clips."""
    from vstar.io import load_split
    from vstar.sources.shapes import ShapesConfig, build_shapes
    from vstar.testing.tiny_models import build_tiny_vlm

    model_dir = build_tiny_vlm(root / "model", seed=0)
    source = build_shapes(
        ShapesConfig(output=str(root / "shapes"), num_train=num_clips, num_validation=0, num_test=0, seed=0)
    )
    return model_dir, list(load_split(source, "train"))


def build_inputs(root: Path, num_requests: int) -> tuple[Path, list[GenerationRequest]]:
    """A tiny model and direct prompts about `num_requests` shapes clips."""
    from vstar.tasks.base import get_task

    model_dir, rows = build_model_and_clips(root, num_requests)
    task = get_task("shapes")
    requests = []
    for row in rows:
        question = task.question(rng=random.Random(row["id"]))
        requests.append(
            GenerationRequest(row["id"], "direct", question, task.direct_prompt(question), row["video"], None, None)
        )
    return model_dir, requests


def timed_pass(
    backend: FixedLengthBackend, requests: Sequence[GenerationRequest], settings: GenerationSettings, root: Path
) -> tuple[float, int, list[dict]]:
    """Seconds to answer every request into a fresh directory, the tokens generated, and the answers."""
    out = Path(tempfile.mkdtemp(dir=root))
    before = backend.generated_tokens
    start = time.perf_counter()
    run_generation(requests, backend, out, "bench", settings, rank=0, world_size=1)
    seconds = time.perf_counter() - start
    return seconds, backend.generated_tokens - before, read_generations(out, "bench")


def bench_batched(num_requests: int, max_new_tokens: int, repeats: int) -> dict[str, float]:
    """`generation_batched_vs_single`: seconds with batch 1 / seconds with batch 16."""
    with tempfile.TemporaryDirectory(prefix="vstar-bench-generation-") as tmp:
        root = Path(tmp)
        model_dir, requests = build_inputs(root, num_requests)
        batched = GenerationSettings(batch_size=16, max_new_tokens=max_new_tokens, temperature=0.0)
        single = replace(batched, batch_size=1)
        backend = FixedLengthBackend(str(model_dir), settings=batched)
        timed_pass(backend, requests[:16], batched, root)  # warm-up: first calls allocate and compile kernels

        seconds: dict[int, list[float]] = {1: [], 16: []}
        answers: dict[int, dict] = {}
        for _ in range(repeats):
            for settings in (single, batched):
                elapsed, tokens, rows = timed_pass(backend, requests, settings, root)
                if tokens != len(requests) * max_new_tokens or len(rows) != len(requests):
                    raise SystemExit(
                        f"batch {settings.batch_size}: {len(rows)} answers with {tokens} new tokens, expected "
                        f"{len(requests)} answers of {max_new_tokens} tokens: the settings did different work"
                    )
                seconds[settings.batch_size].append(elapsed)
                answers[settings.batch_size] = {(r["id"], r["attempt"]): r["answer"] for r in rows}

    same = sum(answers[1][key] == answers[16][key] for key in answers[1])
    single_s, batched_s = statistics.median(seconds[1]), statistics.median(seconds[16])
    ratio = single_s / batched_s
    print(f"{num_requests} requests, {max_new_tokens} new tokens each, greedy, torch on 1 thread, median of {repeats}")
    print(f"{'batch size':>10} {'seconds':>8} {'requests/s':>10} {'tokens/s':>9}")
    for size, value in ((1, single_s), (16, batched_s)):
        print(f"{size:>10} {value:>8.2f} {num_requests / value:>10.1f} {num_requests * max_new_tokens / value:>9.0f}")
    print(
        f"batched vs one at a time: {ratio:.2f}x faster; identical answers in both settings: {same}/{len(answers[1])}"
    )
    return {"generation_batched_vs_single": round(ratio, 2)}


def bench_samples(num_clips: int, max_new_tokens: int, repeats: int, samples: int = 4) -> dict[str, float]:
    """`generation_4samples_vs_4passes`: seconds of `samples` passes of one sample per clip / seconds of one pass
    asking `samples` samples per clip."""
    from vstar.tasks.base import get_task

    with tempfile.TemporaryDirectory(prefix="vstar-bench-samples-") as tmp:
        root = Path(tmp)
        model_dir, rows = build_model_and_clips(root, num_clips)
        task = get_task("shapes")
        settings = GenerationSettings(batch_size=16, max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        one = build_requests(task, rows, "direct", seed=0, num_samples=1)
        many = build_requests(task, rows, "direct", seed=0, num_samples=samples)
        backend = FixedLengthBackend(str(model_dir), settings=settings)
        timed_pass(backend, one[:16], settings, root)  # warm-up

        def check(tokens: int, answers: int, what: str) -> None:
            if tokens != num_clips * samples * max_new_tokens or answers != num_clips * samples:
                raise SystemExit(f"{what}: {answers} answers with {tokens} new tokens: the settings did other work")

        passes_s, one_pass_s = [], []
        distinct = []
        for _ in range(repeats):
            elapsed = tokens = answers = 0
            for seed in range(samples):  # another seed per pass, so the passes draw other answers
                seconds, new_tokens, out = timed_pass(backend, one, replace(settings, seed=seed), root)
                elapsed, tokens, answers = elapsed + seconds, tokens + new_tokens, answers + len(out)
            check(tokens, answers, f"{samples} passes")
            passes_s.append(elapsed)
            seconds, new_tokens, out = timed_pass(backend, many, settings, root)
            check(new_tokens, len(out), f"one pass of {samples} samples")
            one_pass_s.append(seconds)
            by_clip: dict[str, set] = {}
            for row in out:
                by_clip.setdefault(row["id"], set()).add(row["answer"])
            distinct.append(statistics.mean(len(v) for v in by_clip.values()))

    passes, one_pass = statistics.median(passes_s), statistics.median(one_pass_s)
    ratio = passes / one_pass
    answers = num_clips * samples
    print(
        f"{num_clips} clips x {samples} answers, {max_new_tokens} new tokens each, temperature 1.0, batch 16, "
        f"torch on 1 thread, median of {repeats}"
    )
    print(f"{'setting':>22} {'seconds':>8} {'answers/s':>9}")
    for what, value in ((f"{samples} passes of 1 sample", passes), (f"1 pass of {samples} samples", one_pass)):
        print(f"{what:>22} {value:>8.2f} {answers / value:>9.1f}")
    print(
        f"{samples} samples in one pass vs {samples} passes: {ratio:.2f}x faster; distinct answers per clip in one "
        f"pass: {statistics.mean(distinct):.2f} of {samples}"
    )
    return {f"generation_{samples}samples_vs_{samples}passes": round(ratio, 2)}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 requests of 8 tokens, once, no recording")
    parser.add_argument("--only", choices=("batched", "samples"), help="run one of the two comparisons")
    parser.add_argument("--requests", type=int, default=64, help="requests (clips for `samples`) in each setting")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per answer")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    args = parser.parse_args(argv)
    num_requests, max_new_tokens, repeats = (
        (16, 8, 1) if args.quick else (args.requests, args.max_new_tokens, args.repeats)
    )
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    if args.only in (None, "batched"):
        results.update(bench_batched(num_requests, max_new_tokens, repeats))
    if args.only in (None, "samples"):
        # A quarter as many clips: each is answered 4 times, so both comparisons answer as many requests.
        results.update(bench_samples(max(4, num_requests // 4), max_new_tokens, repeats))
    return record(results, quick=args.quick)


if __name__ == "__main__":
    main()
