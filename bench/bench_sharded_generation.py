"""Generation sharded over 2 processes (`torchrun`, gloo) against 1 process, on the same machine and requests.

Run: `PYTHONPATH=src python bench/bench_sharded_generation.py [--quick]`; the ratio is also written to
`bench/results.json` (key `sharded_generation_2proc_vs_1proc` = generation seconds of the faster single process,
with one or two torch threads, / generation seconds of 2 processes with one thread each).

Each setting is a real launch: `torchrun --nproc_per_node N` runs this script as N workers, each building the
transformers backend and answering its chunks with `run_generation` (the same call `vstar generate` and the loop
make, barriers included). The time is the generation phase on rank 0, from the barrier after the model loaded to
the barrier after the last rank wrote its last chunk, so the slowest rank counts. Start-up (imports, model load,
about 10 s per launch here) is reported apart: it is paid once per pass, not per clip. Answers have a fixed length
(end-of-turn suppressed, see bench_generation.py) and the merged answers of every setting must be identical.

A single process can use the machine's two cores through torch's threads, so both single-process settings run
and the faster one is the baseline (on tiny models a second thread often costs more than it gains). On GPUs the
same split gives each GPU its own share.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def worker(requests_file: Path, model_dir: Path, output_dir: Path, settings_json: str) -> None:
    import torch

    from vstar.distributed import init_distributed, is_main_process, wait_for_everyone
    from vstar.generate.base import GenerationSettings, run_generation

    sys.path.insert(0, str(BENCH))
    from bench_generation import FixedLengthBackend

    torch.set_num_threads(int(os.environ["VSTAR_BENCH_THREADS"]))
    started = time.perf_counter()
    init_distributed()
    settings = GenerationSettings(**json.loads(settings_json))
    requests = pickle.loads(requests_file.read_bytes())
    backend = FixedLengthBackend(str(model_dir), settings=settings)
    wait_for_everyone()
    ready = time.perf_counter()
    run_generation(requests, backend, output_dir, "direct", settings)
    done = time.perf_counter()
    if is_main_process():
        (output_dir / "timing.json").write_text(json.dumps({"startup": ready - started, "generation": done - ready}))


def launch(processes: int, threads: int, root: Path, model_dir: Path, settings: dict, tag: str) -> dict:
    output = root / tag
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        str(Path(__file__).resolve()), "--worker",
        "--requests-file", str(root / "requests.pkl"), "--model", str(model_dir), "--output", str(output),
        "--settings", json.dumps(settings),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "VSTAR_BENCH_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent / "src"), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    timing = json.loads((output / "timing.json").read_text())
    from vstar.generate.base import read_generations

    return {**timing, "wall": wall, "answers": read_generations(output, "direct")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 short requests, to check that everything runs.")
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.requests_file, args.model, args.output, args.settings)
        return

    sys.path.insert(0, str(BENCH))
    from bench_generation import build_inputs
    from results import record

    num_requests = 16 if args.quick else args.requests
    # Chunks are the unit of sharding: 8 answers each gives each rank several to work on.
    settings = {"batch_size": 8, "chunk_size": 8, "max_new_tokens": 8 if args.quick else 32, "decode_workers": 1}
    with tempfile.TemporaryDirectory(prefix="vstar-bench-sharded-") as tmp:
        root = Path(tmp)
        model_dir, requests = build_inputs(root, num_requests)
        (root / "requests.pkl").write_bytes(pickle.dumps(requests))
        runs = {
            "1 process x 2 threads": launch(1, 2, root, model_dir, settings, "one-2threads"),
            "1 process x 1 thread": launch(1, 1, root, model_dir, settings, "one-1thread"),
            "2 processes x 1 thread": launch(2, 1, root, model_dir, settings, "two-1thread"),
        }
    answers = [run["answers"] for run in runs.values()]
    if any(a != answers[0] for a in answers) or len(answers[0]) != num_requests:
        raise SystemExit("The settings gave different answers: the comparison would be meaningless.")

    tokens, batch = settings["max_new_tokens"], settings["batch_size"]
    print(f"\nGeneration of {num_requests} answers x {tokens} tokens, batch {batch}")
    print(f"{'setting':<24} {'generation s':>13} {'start-up s':>11} {'wall s':>8}")
    for name, run in runs.items():
        print(f"{name:<24} {run['generation']:>13.2f} {run['startup']:>11.2f} {run['wall']:>8.2f}")
    two = runs["2 processes x 1 thread"]["generation"]
    one_2threads, one_1thread = runs["1 process x 2 threads"]["generation"], runs["1 process x 1 thread"]["generation"]
    best_single = min(one_2threads, one_1thread)
    ratio = best_single / two
    print(f"2 processes vs the faster single process: {ratio:.2f}x faster generation")
    record(
        {
            "sharded_generation_2proc_vs_1proc": round(ratio, 3),
            "sharded_generation_2proc_vs_1proc_2threads": round(one_2threads / two, 3),
            "sharded_generation_2proc_vs_1proc_1thread": round(one_1thread / two, 3),
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
