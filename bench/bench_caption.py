"""`vstar caption` with the windows of many clips batched per round, against one window at a time.

Run: `PYTHONPATH=src python bench/bench_caption.py [--quick] [--clips 64] [--seconds 40] [--repeats 1]`; writes
`caption_batched_vs_sequential` (output tokens/s batched over tokens/s one at a time) and
`caption_output_tokens_per_s` (batched) to `bench/results.json`.

Both settings run the whole command through the Python API (`vstar.synthesize.caption`): source dataset, rounds of
level-1 windows (real mp4 files decoded by PyAV at 1 frame per second), level-2 summaries and level-3 descriptions
through `run_generation`, and the written caption dataset. The teacher is the same tiny Qwen2.5-VL in both settings:
the format teacher of `vstar.testing.teachers` (trained here first, a few minutes, unless `--teacher DIR` gives one),
whose answers pass the caption parser, so every clip goes through all its rounds (an untrained tiny model's random
text is rejected at the first window and the rounds would be empty). Generated tokens are counted (end-of-turn and
padding left out) and the ratio is of output tokens per second; the script checks that both settings asked the same
requests. The only difference is `batch_size`: 64 (each round's windows of all 64 clips in one batch) against 1 (one
window at a time). Torch runs on one thread; the settings take turns and the median is compared. `--quick` checks
that it runs; it records nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_generation import FixedLengthBackend
from results import record

from vstar.generate.base import GenerationSettings
from vstar.synthesize.captions import CaptionConfig, caption, caption_settings


def build_source(root: Path, clips: int, seconds: int) -> Path:
    """`clips` real mp4 files of a square that turns and changes colour, as a source dataset."""
    from datasets import Features, Value, Video

    from vstar.io import split_file, write_parquet
    from vstar.video import write_video

    rows = []
    for i in range(clips):
        frames = np.full((seconds * 2, 64, 64, 3), 12, dtype=np.uint8)
        for t in range(len(frames)):
            x = abs((t * 2 + i * 5) % 64 - 32)  # bounces between the edges
            frames[t, 16:48, x : x + 32] = (200, 40 + 5 * (i % 40), 40) if (t // 40) % 2 == 0 else (40, 60, 200)
        path = write_video(root / "videos" / f"clip{i}.mp4", frames, fps=2)
        rows.append({"id": f"clip{i}", "video": {"path": str(path), "bytes": None}, "start": None, "end": None})
    features = Features(
        {"id": Value("string"), "video": Video(decode=False), "start": Value("float64"), "end": Value("float64")}
    )
    write_parquet(root / "source" / split_file("train"), rows, features)
    return root / "source"


def timed_run(backend, config: CaptionConfig, settings: GenerationSettings) -> tuple[float, int, int]:
    """Seconds for a whole caption run into a fresh output, the tokens generated, and the requests asked."""
    shutil.rmtree(config.output, ignore_errors=True)
    before = backend.generated_tokens
    start = time.perf_counter()
    out = caption(config, settings, backends={config.teacher[0]: backend})
    seconds = time.perf_counter() - start
    report = json.loads((out / "caption_report.json").read_text())
    asked = sum(sum(t["requests"].values()) for t in report["teachers"].values())
    return seconds, backend.generated_tokens - before, asked


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 clips of 12 s, once, no recording")
    parser.add_argument("--clips", type=int, default=64, help="clips captioned in each setting")
    parser.add_argument("--batch-size", type=int, default=64, help="requests per batch in the batched setting")
    parser.add_argument("--seconds", type=int, default=40, help="length of each clip (40 s: 4 windows, 1 summary)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per setting")
    parser.add_argument("--teacher", default=None, help="a format teacher already built (default: build one)")
    args = parser.parse_args(argv)
    clips, seconds, max_new_tokens, repeats = (
        (4, 12, 64, 1) if args.quick else (args.clips, args.seconds, args.max_new_tokens, args.repeats)
    )
    torch.set_num_threads(1)
    from vstar.testing.teachers import build_format_teacher

    with tempfile.TemporaryDirectory(prefix="vstar-bench-caption-") as tmp:
        root = Path(tmp)
        source = build_source(root, clips, seconds)
        model_dir = build_format_teacher(args.teacher or root / "teacher")
        config = CaptionConfig(dataset=str(source), teacher=["tiny"], output=str(root / "captions"))
        generation = GenerationSettings(batch_size=args.batch_size, max_new_tokens=max_new_tokens)
        batched = caption_settings(config, generation)
        sequential = replace(batched, batch_size=1)
        backend = FixedLengthBackend(str(model_dir), settings=batched)
        backend.model.generation_config.min_new_tokens = None  # the teacher's own answers, counted
        timed_run(backend, replace(config, limit=2), batched)  # warm-up: first calls allocate
        runs: dict[int, list[tuple[float, int, int]]] = {1: [], batched.batch_size: []}
        for _ in range(repeats):
            for settings in (sequential, batched):
                runs[settings.batch_size].append(timed_run(backend, config, settings))

    def throughput(size: int) -> float:
        return statistics.median(tokens / seconds for seconds, tokens, _ in runs[size])

    size = args.batch_size
    if {r[2] for r in runs[1] + runs[size]} != {runs[size][0][2]}:
        raise SystemExit(f"the settings asked different requests: {runs}")
    ratio = throughput(size) / throughput(1)
    print(f"{clips} clips of {seconds} s, at most {max_new_tokens} new tokens per answer, torch on 1 thread")
    print(f"{'batch size':>10} {'seconds':>8} {'requests':>8} {'tokens/s':>9}")
    for n in (1, size):
        elapsed = statistics.median(s for s, _, _ in runs[n])
        print(f"{n:>10} {elapsed:>8.2f} {runs[n][0][2]:>8} {throughput(n):>9.0f}")
    print(f"windows of all clips batched vs one window at a time: {ratio:.2f}x the output tokens per second")
    results = {
        "caption_batched_vs_sequential": round(ratio, 2),
        "caption_output_tokens_per_s": round(throughput(size), 1),
    }
    return record(results, quick=args.quick)


if __name__ == "__main__":
    main()
