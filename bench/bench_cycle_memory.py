"""Peak memory of one loop process over a source with embedded video bytes: 10,000 rows vs 1,000.

A rank of `vstar cycle` reads the train split, builds every request of a pass and hands the clips to the decoder
one batch at a time. Each run is a fresh process that does exactly that over a Hub-layout source whose `video`
column embeds 48 KB of (incompressible) bytes per row, then reads every clip's bytes once, as generation does; its
private (anonymous) resident memory is sampled every few milliseconds. The baseline, measured in the same run, is
the way the loop used to hold a split: every row as a Python dict (`rows_with_class_names` of the whole table).
Mapped Arrow pages of the source are page cache the kernel can drop and that processes share, so they are printed
(`rss`) but the ratio is over private memory.

Run: `PYTHONPATH=src python bench/bench_cycle_memory.py [--rows 1000 10000] [--quick]`; recorded in
`bench/results.json` as `cycle_rank_peak_mem_10k_vs_1k` (target <= 1.2) and `cycle_rank_peak_mem_10k_vs_1k_dicts`
(the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from results import record

HERE = Path(__file__).resolve().parent
VIDEO_BYTES = 48 * 1024


def build_source(directory: Path, rows: int) -> Path:
    """A Hub-layout source of `rows` rows with embedded bytes (10 classes, written 256 rows at a time)."""
    from datasets import ClassLabel, Features, Value, Video

    from vstar.io import ParquetRowWriter, split_file

    features = Features(
        {
            "id": Value("string"),
            "video": Video(decode=False),
            "start": Value("float64"),
            "end": Value("float64"),
            "label": ClassLabel(names=[f"class {i}" for i in range(10)]),
        }
    )
    with ParquetRowWriter(directory / split_file("train"), features, batch_size=256) as writer:
        for i in range(rows):
            writer.write(
                {
                    "id": f"clip{i:06d}",
                    "video": {"path": f"clip{i:06d}.mp4", "bytes": os.urandom(VIDEO_BYTES)},
                    "start": None,
                    "end": None,
                    "label": i % 10,
                }
            )
    return directory


def _anon_kb() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(values["RssAnon"].split()[0]), int(values["VmRSS"].split()[0])


def measure(source: str, mode: str) -> dict:
    """In this process: hold the split as the loop does (`lazy`) or as dicts (`dicts`), touch every clip."""
    peak = {"anon": 0, "rss": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            anon, rss = _anon_kb()
            peak["anon"], peak["rss"] = max(peak["anon"], anon), max(peak["rss"], rss)
            time.sleep(0.005)

    import vstar.cycle  # noqa: F401  (imports done before the baseline reading)

    start_anon, _ = _anon_kb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    touched = 0
    if mode == "lazy":
        from vstar.configs import CycleConfig
        from vstar.cycle import CycleRunner
        from vstar.train.sft import VStarSFTConfig

        with tempfile.TemporaryDirectory() as run_dir:
            config = CycleConfig(source_dataset=source, eval_split=None, task="action_recognition", run_dir=run_dir)
            runner = CycleRunner(config, VStarSFTConfig(output_dir=run_dir, model_name_or_path="unused"))
            requests = runner._requests(1, "direct", sorted(runner.sources))
            for request in requests:
                touched += len(request.video()["bytes"])
    else:
        from vstar.io import load_split, rows_with_class_names

        rows = {r["id"]: r for r in rows_with_class_names(load_split(source, "train"))}
        for row in rows.values():
            touched += len(row["video"]["bytes"])
    stop.set()
    sampler.join()
    return {
        "mode": mode,
        "peak_anon_mb": peak["anon"] / 1024,
        "growth_anon_mb": (peak["anon"] - start_anon) / 1024,
        "peak_rss_mb": peak["rss"] / 1024,
        "touched_mb": touched / 2**20,
        "seconds": time.perf_counter() - began,
    }


def run_child(source: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as cache:
        env["HF_DATASETS_CACHE"] = cache  # every run builds its own Arrow copy, as a fresh machine would
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(source), mode], env=env, capture_output=True, text=True
        )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--quick", action="store_true", help="Small sizes, nothing recorded.")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    small, large = (100, 1000) if args.quick else args.rows
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for rows in (small, large):
            source = build_source(Path(root) / f"source-{rows}", rows)
            for mode in ("lazy", "dicts"):
                results[(rows, mode)] = run_child(source, mode)
                r = results[(rows, mode)]
                print(
                    f"{rows:>6} rows {mode:>5}: private peak {r['peak_anon_mb']:7.1f} MB "
                    f"(+{r['growth_anon_mb']:6.1f} MB), rss peak {r['peak_rss_mb']:7.1f} MB, "
                    f"{r['touched_mb']:.0f} MB of clips read in {r['seconds']:.1f} s"
                )
    ratio = results[(large, "lazy")]["peak_anon_mb"] / results[(small, "lazy")]["peak_anon_mb"]
    baseline = results[(large, "dicts")]["peak_anon_mb"] / results[(small, "dicts")]["peak_anon_mb"]
    print(f"cycle_rank_peak_mem ({large} rows vs {small}): {ratio:.3f} (target <= 1.2)")
    print(f"baseline, every row as a dict: {baseline:.3f}")
    record(
        {"cycle_rank_peak_mem_10k_vs_1k": round(ratio, 3), "cycle_rank_peak_mem_10k_vs_1k_dicts": round(baseline, 3)},
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
