"""Source building at scale: clips probed per second with 1 and 2 processes, and the peak memory of a Kinetics
build of 1,000 vs 10,000 rows (it should stay flat: rows stream to Parquet one row group at a time).

The probed clips are a few dozen distinct H.264 files (2 s, 25 fps, 160 x 120) hard-linked under many names, so
the numbers measure probing, not disk reads; the memory runs use smaller clips (1 s, 48 x 32) so that 10,000 probes
stay quick. Each memory run is a fresh process whose resident memory is sampled every few milliseconds while it
builds; the peak is compared, and the growth over the memory at the start of the build is printed too. On a machine
whose second core is busy, 2 processes cannot beat 1: the CPU time per clip is printed to tell overhead from
contention.

Run: `PYTHONPATH=src python bench/bench_sources.py [--clips 1000] [--rows 1000 10000]`; the numbers are also
written to `bench/results.json` (keys `probe_clips_per_s_1proc`, `probe_clips_per_s_2proc`, `probe_2proc_vs_1proc`,
`build_peak_mem_ratio_10k_vs_1k`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from results import record

HERE = Path(__file__).resolve().parent
DISTINCT_CLIPS = 24


def make_clips(folder: Path, count: int, shape: tuple[int, int, int] = (50, 120, 160), fps: float = 25) -> list[Path]:
    """`count` clip paths: `DISTINCT_CLIPS` encoded files of `shape` (frames, height, width), hard-linked (or
    copied) under the other names `clip{i:06d}_000000_000010.mp4`."""
    from vstar.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    originals = []
    for i in range(DISTINCT_CLIPS):
        frames = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        originals.append(write_video(folder / f"original-{i:03d}.mp4", frames, fps=fps))
    paths = []
    for i in range(count):
        path = folder / f"clip{i:06d}_000000_000010.mp4"
        try:
            os.link(originals[i % DISTINCT_CLIPS], path)
        except OSError:
            shutil.copyfile(originals[i % DISTINCT_CLIPS], path)
        paths.append(path)
    return paths


def probe_rate(paths: Sequence[Path], num_proc: int) -> tuple[float, float]:
    """Clips probed per second by `parallel_map(probe_video, ...)` with `num_proc` processes, and the CPU
    milliseconds spent per clip (this process and its workers)."""
    from vstar.curate.executors import parallel_map
    from vstar.sources.probe import probe_video

    before, start = os.times(), time.perf_counter()
    results = [probe for _, probe in parallel_map(probe_video, [str(p) for p in paths], num_proc=num_proc)]
    elapsed, after = time.perf_counter() - start, os.times()
    assert all(probe.ok for probe in results), [p.error for p in results if not p.ok][:3]
    cpu = sum(after[:4]) - sum(before[:4])
    return len(paths) / elapsed, 1000 * cpu / len(paths)


def write_kinetics_csv(path: Path, rows: int, videos: Path) -> None:
    """A Kinetics-style CSV whose rows point at `clip{i:06d}_000000_000010.mp4` (700 classes)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for i in range(rows):
            writer.writerow([f"class {i % 700:03d}", f"clip{i:06d}", 0, 10, "train"])


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # no /proc: fall back to the high-water mark
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(csv_path: str, videos: str, output: str) -> None:
    """One build in this process; prints its peak and starting resident memory (MB) and time as JSON."""
    import logging
    import threading

    from vstar.sources.kinetics import KineticsConfig, build_kinetics

    logging.disable(logging.WARNING)
    start_mb = peak_mb = _rss_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_mb
        while not done.wait(0.005):
            peak_mb = max(peak_mb, _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    build_kinetics(KineticsConfig(annotations=[csv_path], videos=videos, output=output, num_proc=1))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak_mb = max(peak_mb, _rss_mb())
    sys.stdout.write(json.dumps({"start_mb": start_mb, "peak_mb": peak_mb, "seconds": seconds}) + "\n")


def build_memory(root: Path, rows: int, videos: Path) -> dict[str, float]:
    """Peak memory of a Kinetics build of `rows` rows, in a fresh process."""
    csv_path = root / f"train-{rows}.csv"
    write_kinetics_csv(csv_path, rows, videos)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["TQDM_DISABLE"] = "1"
    command = [sys.executable, __file__, "--child", str(csv_path), str(videos), str(root / f"out-{rows}")]
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000, help="Clips probed per measurement.")
    parser.add_argument("--rows", type=int, nargs=2, default=[1000, 10000], help="Row counts of the memory runs.")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return {}
    with tempfile.TemporaryDirectory(prefix="vstar-bench-sources-") as tmp:
        root = Path(tmp)
        paths = make_clips(root / "probe", args.clips)
        probe_rate(paths[: DISTINCT_CLIPS * 2], 1)  # warm the page cache and the imports
        (rate_1, cpu_1), (rate_2, cpu_2) = probe_rate(paths, 1), probe_rate(paths, 2)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"probe: {rate_1:,.0f} clips/s with 1 process, {rate_2:,.0f} clips/s with 2 ({rate_2 / rate_1:.2f}x)")
        print(f"       CPU per clip {cpu_1:.2f} ms (1 process), {cpu_2:.2f} ms (2); load average {load}")
        make_clips(root / "small", max(args.rows), shape=(8, 32, 48), fps=8)
        small, large = (build_memory(root, rows, root / "small") for rows in args.rows)
    for rows, run in zip(args.rows, (small, large)):
        growth = run["peak_mb"] - run["start_mb"]
        print(
            f"build {rows:>6,} rows: peak {run['peak_mb']:.1f} MB ({run['start_mb']:.1f} MB at the start, "
            f"+{growth:.1f} MB while building), {run['seconds']:.1f} s"
        )
    ratio = large["peak_mb"] / small["peak_mb"]
    growth_ratio = (large["peak_mb"] - large["start_mb"]) / max(small["peak_mb"] - small["start_mb"], 0.1)
    sizes = f"{args.rows[1]:,} vs {args.rows[0]:,} rows"
    print(f"peak memory {sizes}: {ratio:.3f}x (growth while building: {growth_ratio:.2f}x)")
    numbers = {
        "probe_clips_per_s_1proc": round(rate_1, 1),
        "probe_clips_per_s_2proc": round(rate_2, 1),
        "probe_2proc_vs_1proc": round(rate_2 / rate_1, 2),
        "build_peak_mem_ratio_10k_vs_1k": round(ratio, 3),
    }
    return record(numbers)


if __name__ == "__main__":
    main()
