"""Generation split over processes gives the same answers as one process, and survives a kill.

The launched tests run the real command under `torchrun` with the gloo backend (2 processes on the CPU).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    answered_keys,
    get_backend,
    merge_generations,
    read_generations,
    run_generation,
)

CHUNK, BATCH, TOKENS = 4, 2, 24


def launch(nproc: int, model: Path, dataset: Path, output: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "vstar.cli", "generate",
        "--model", str(model), "--dataset", str(dataset), "--split", "train", "--task", "shapes",
        "--output_dir", str(output), "--chunk_size", str(CHUNK), "--batch_size", str(BATCH),
        "--max_new_tokens", str(TOKENS),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def kill_rank(launcher: subprocess.Popen, rank: int) -> None:
    import psutil

    for worker in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if worker.environ().get("RANK") == str(rank):
                worker.send_signal(signal.SIGKILL)
                return
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no running worker with RANK={rank}")


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def merged_rows(output: Path) -> list[dict]:
    return pq.read_table(str(output / "direct.parquet")).to_pylist()


def chunk_files(output: Path) -> list[Path]:
    return sorted(output.glob("direct-rank*-*.parquet"))


@pytest.mark.slow
def test_two_processes_killed_and_resumed_match_one_process(tiny_model_dirs, shapes_dir, tmp_path):
    model = tiny_model_dirs["qwen2_5_vl"]
    single = tmp_path / "one-process"
    finish(launch(1, model, shapes_dir, single))
    reference = merged_rows(single)
    assert len(reference) == 48 and len(chunk_files(single)) == 48 // CHUNK

    sharded = tmp_path / "two-processes"
    process = launch(2, model, shapes_dir, sharded)
    deadline = time.monotonic() + 300
    while len(chunk_files(sharded)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # Rank 1 dies as if the kernel's OOM killer took it; torchrun then stops rank 0 and fails the launch.
    kill_rank(process, 1)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output[-3000:]
    finished_before_kill = len(chunk_files(sharded))
    assert 2 <= finished_before_kill < 48 // CHUNK, "the kill should land while the processes are generating"
    assert not (sharded / "direct.parquet").exists()
    # Both ranks wrote their share: chunk files of rank 0 and rank 1.
    assert {p.name.split("-")[1] for p in chunk_files(sharded)} <= {"rank000", "rank001"}

    before_kill = {p.name: p.read_bytes() for p in chunk_files(sharded)}
    finish(launch(2, model, shapes_dir, sharded))
    # The finished chunks were kept as they were, not answered again.
    assert {name: (sharded / name).read_bytes() for name in before_kill} == before_kill
    rows = merged_rows(sharded)
    assert rows == reference
    # Nothing was answered twice: the chunk files hold each request exactly once.
    total = sum(pq.read_metadata(str(p)).num_rows for p in chunk_files(sharded))
    assert total == 48
    assert {p.name.split("-")[1] for p in chunk_files(sharded)} == {"rank000", "rank001"}


def test_any_split_and_resume_gives_the_same_answers(tiny_model_dirs, shapes_dir, tmp_path):
    """The chunk plan depends on the requests only: a 2-rank run stopped after rank 0, finished by 1 rank, matches."""
    from vstar.io import load_split

    rows = load_split(str(shapes_dir), "train").select(range(20))
    requests = [
        GenerationRequest(r["id"], "direct", "What moves?", f"What moves?{' Look.' * (i % 3)}", r["video"])
        for i, r in enumerate(rows)
    ]
    settings = GenerationSettings(batch_size=3, chunk_size=4, max_new_tokens=8)
    backend = get_backend(settings, str(tiny_model_dirs["qwen2_5_vl"]))

    run_generation(requests, backend, tmp_path / "one", "direct", settings, rank=0, world_size=1)
    reference = read_generations(tmp_path / "one", "direct")
    assert [r["id"] for r in reference] == sorted(r.id for r in requests)

    # Rank 0 of two finishes its chunks, rank 1 never runs; one process then answers the rest.
    run_generation(requests, backend, tmp_path / "resumed", "direct", settings, rank=0, world_size=2)
    assert len(answered_keys(tmp_path / "resumed", "direct")) == 12
    assert run_generation(requests, backend, tmp_path / "resumed", "direct", settings, rank=0, world_size=1) == 8
    assert run_generation(requests, backend, tmp_path / "resumed", "direct", settings, rank=0, world_size=1) == 0
    assert read_generations(tmp_path / "resumed", "direct") == reference

    merged = merge_generations(tmp_path / "resumed", "direct")
    assert pq.read_table(str(merged)).to_pylist() == reference
    # The merged file is not mistaken for a chunk on the next read.
    assert read_generations(tmp_path / "resumed", "direct") == reference
