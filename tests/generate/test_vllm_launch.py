"""The vLLM backend under `torchrun`: which process runs which engine, the engine's arguments, and a real 2-process
CPU launch (gloo) around the stand-in engine of `vstar.testing.fake_vllm` (vLLM needs a GPU).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

from vstar.generate import GenerationSettings, read_generations
from vstar.generate.base import run_generation
from vstar.generate.vllm import EnginePlan, VLLMBackend, engine_kwargs, engine_plan, teardown_vllm_groups
from vstar.testing import fake_vllm

WORLD_SIZES = range(1, 17)
TP_SIZES = (1, 2, 4, 8)


# -- the plan -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_plan_for_every_world_size_on_one_node(world_size, tp):
    if world_size == 1:
        plan = engine_plan(1, 0, 0, tp)
        # One process: its engine starts its own workers on the first `tp` GPUs.
        assert plan == EnginePlan(False, tuple(range(tp)), (0,), 0, 0, 1) and plan.leader
        return
    if world_size % tp:
        with pytest.raises(ValueError, match="tensor_parallel_size"):
            engine_plan(world_size, 0, 0, tp)
        return
    plans = [engine_plan(world_size, rank, rank, tp) for rank in range(world_size)]
    assert all(p.launched for p in plans)
    # Consecutive ranks form each engine; every rank is in exactly one, on its own GPU.
    groups = sorted({p.group for p in plans})
    assert groups == [tuple(range(first, first + tp)) for first in range(0, world_size, tp)]
    for rank, plan in enumerate(plans):
        assert rank in plan.group and plan.group[plan.rank_in_group] == rank
        assert plan.device == rank and plan.devices == plan.group  # one node: local ranks are the ranks
        assert (plan.data_parallel_rank, plan.data_parallel_size) == (rank // tp, world_size // tp)
    # One leader (writer) per engine, and one data-parallel share per engine.
    assert sorted(p.group for p in plans if p.leader) == groups
    assert sorted({p.data_parallel_rank for p in plans}) == list(range(world_size // tp))


@pytest.mark.parametrize("tp", TP_SIZES)
def test_plan_on_two_nodes_of_eight(tp):
    plans = [engine_plan(16, rank, rank % 8, tp, local_world_size=8) for rank in range(16)]
    for rank, plan in enumerate(plans):
        assert plan.device == rank % 8 and all(0 <= d < 8 for d in plan.devices)
        # No engine spans two nodes.
        assert len({r // 8 for r in plan.group}) == 1
        assert plan.data_parallel_rank == rank // tp and plan.data_parallel_size == 16 // tp
    assert engine_plan(16, 13, 5, 2, local_world_size=8) == EnginePlan(True, (4, 5), (12, 13), 1, 6, 8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((6, 0, 0, 4), "does not divide the 6 processes"),
        ((16, 0, 0, 16, 8), "larger than the 8 processes"),
        ((4, 0, 0, 8), "larger than the 4 processes"),
        ((12, 0, 0, 8, 4), "larger than the 4 processes"),
        ((12, 0, 0, 4, 6), "does not divide the 6 processes"),
        ((8, 3, 2, 1), "consecutive ranks"),
        ((8, 8, 0, 1), "outside a launch"),
        ((8, 0, 0, 0), "at least 1"),
        ((1, 0, 0, 4, None, 2), "this machine has 2"),
        ((8, 0, 0, 2, 8, 4), "one process per GPU"),
    ],
)
def test_plan_errors_name_the_fix(args, message):
    with pytest.raises(ValueError, match=message):
        engine_plan(*args)


# -- the engine's arguments -----------------------------------------------------------------------------------
def test_engine_kwargs_under_a_launch():
    settings = GenerationSettings(tensor_parallel_size=2, gpu_memory_utilization=0.7, seed=10)
    plans = [engine_plan(8, rank, rank, 2) for rank in range(8)]
    kwargs = [engine_kwargs("org/model", settings, plan=p) for p in plans]
    for plan, kw in zip(plans, kwargs):
        assert kw["distributed_executor_backend"] == "external_launcher"
        assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"]) == (2, 0.7)
        assert kw["seed"] == 10 + plan.data_parallel_rank
    # The processes of one engine share a seed (vLLM needs it); engines differ.
    assert [kw["seed"] for kw in kwargs] == [10, 10, 11, 11, 12, 12, 13, 13]
    # One process keeps vLLM's own executor and the settings' seed.
    alone = engine_kwargs("org/model", settings, plan=engine_plan(1, 0, 0, 2))
    assert "distributed_executor_backend" not in alone and alone["seed"] == 10
    with pytest.raises(ValueError, match="spans 1 processes"):
        engine_kwargs("org/model", settings, plan=engine_plan(8, 0, 0, 1))


def test_teardown_keeps_the_launch_group_and_one_process_destroys_all(tmp_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    state = sys.modules["vllm.distributed.parallel_state"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        state._WORLD, state._TP = fake_vllm.FakeGroupCoordinator([[0]]), fake_vllm.FakeGroupCoordinator([[0]])
        world, tp = state._WORLD, state._TP
        teardown_vllm_groups(state, launched=True)
        assert world.destroyed and tp.destroyed and state._WORLD is None and state._TP is None
        assert dist.is_initialized()
        dist.barrier()  # the launch's group still works
        # Alone, the process group is vLLM's own and goes with it (as vLLM's destroy_distributed_environment does).
        state._WORLD = fake_vllm.FakeGroupCoordinator([[0]])
        teardown_vllm_groups(state, launched=False)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# -- a 2-process launch ---------------------------------------------------------------------------------------
LAUNCHED = textwrap.dedent(
    """
    import json, os, sys

    import torch
    import torch.distributed as dist
    from datasets import load_dataset

    from vstar.generate import GenerationRequest, GenerationSettings
    from vstar.generate.base import run_generation
    from vstar.testing import fake_vllm

    torch.set_num_threads(1)
    fake_vllm.install()
    from vstar.generate.vllm import VLLMBackend

    model, shapes, out, tp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rows = list(load_dataset(shapes, split="test").select(range(6)))
    requests = [
        GenerationRequest(r["id"], attempt, f"Q{i}: what colour is the square?", f"P{i} {attempt}", r["video"])
        for i, r in enumerate(rows)
        for attempt in ("direct", "rationalized")
    ]
    settings = GenerationSettings(backend="vllm", batch_size=2, chunk_size=2, tensor_parallel_size=tp)
    backend = VLLMBackend(model, settings=settings)
    answered = run_generation(requests, backend, out, "direct", settings)
    llm = fake_vllm.FakeLLM.instances[-1]
    state = sys.modules["vllm.distributed.parallel_state"]
    world, group = state._WORLD, state._TP
    backend.close()
    dist.barrier()  # the launch's process group survives the engine
    report = {
        "rank": dist.get_rank(),
        "shard": list(backend.shard(dist.get_rank(), dist.get_world_size())),
        "kwargs": {k: v for k, v in llm.kwargs.items() if k != "limit_mm_per_prompt"},
        "prompts": [p["prompt"] for call in llm.calls for p in call["prompts"]],
        "answered": answered,
        "torn_down": [world.destroyed, group.destroyed, state._WORLD is None],
        "group_alive": dist.is_initialized(),
    }
    with open(os.path.join(out, f"report-{dist.get_rank()}.json"), "w") as f:
        json.dump(report, f)
    """
)


def launch(script, model, shapes_dir, out, tp):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), model, str(shapes_dir), str(out), str(tp),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return [json.loads((out / f"report-{rank}.json").read_text()) for rank in (0, 1)]


def chunk_files(out) -> dict[str, list[tuple]]:
    files: dict[str, list[tuple]] = {}
    for path in sorted(out.glob("direct-rank*.parquet")):
        from datasets import load_dataset

        shard = path.name.split("-")[1]
        keys = [(r["id"], r["attempt"]) for r in load_dataset("parquet", data_files=str(path), split="train")]
        files.setdefault(shard, []).extend(keys)
    return files


@pytest.mark.slow
def test_two_processes_answer_as_one_data_parallel_or_tensor_parallel(
    monkeypatch, tiny_model_dirs, shapes_dir, tmp_path
):
    model = str(tiny_model_dirs["qwen2_5_vl"])
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)

    # One process, as the reference.
    fake_vllm.install(monkeypatch)
    from datasets import load_dataset

    from vstar.generate import GenerationRequest

    rows = list(load_dataset(str(shapes_dir), split="test").select(range(6)))
    requests = [
        GenerationRequest(r["id"], attempt, f"Q{i}: what colour is the square?", f"P{i} {attempt}", r["video"])
        for i, r in enumerate(rows)
        for attempt in ("direct", "rationalized")
    ]
    settings = GenerationSettings(backend="vllm", batch_size=2, chunk_size=2)
    single_dir = tmp_path / "one"
    run_generation(requests, VLLMBackend(model, settings=settings), single_dir, "direct", settings, 0, 1)
    single = read_generations(single_dir, "direct")
    all_keys = sorted((r.id, r.attempt) for r in requests)

    # Two engines (tensor_parallel_size 1): each answers its own chunks, together all of them, as one process does.
    out = tmp_path / "dp"
    reports = launch(script, model, shapes_dir, out, tp=1)
    files = chunk_files(out)
    assert sorted(files) == ["rank000", "rank001"]
    assert not set(files["rank000"]) & set(files["rank001"])
    assert sorted(files["rank000"] + files["rank001"]) == all_keys
    assert read_generations(out, "direct") == single
    for rank, report in enumerate(reports):
        assert report["shard"] == [rank, 2, True]
        assert report["kwargs"]["distributed_executor_backend"] == "external_launcher"
        assert report["kwargs"]["seed"] == settings.seed + rank
        assert report["answered"] == len(files[f"rank{rank:03d}"]) == len(report["prompts"])
        assert report["torn_down"] == [True, True, True] and report["group_alive"]
    assert not set(reports[0]["prompts"]) & set(reports[1]["prompts"])

    # One engine over both processes (tensor_parallel_size 2): both answer the same chunks in lockstep (the stand-in
    # checks every batch's prompts are the same on both), and only the first writes.
    out = tmp_path / "tp"
    reports = launch(script, model, shapes_dir, out, tp=2)
    assert sorted(chunk_files(out)) == ["rank000"]
    assert sorted(chunk_files(out)["rank000"]) == all_keys
    assert read_generations(out, "direct") == single
    assert reports[0]["shard"] == [0, 1, True] and reports[1]["shard"] == [0, 1, False]
    assert reports[0]["prompts"] == reports[1]["prompts"] and len(reports[0]["prompts"]) == len(requests)
    assert [r["kwargs"]["seed"] for r in reports] == [settings.seed, settings.seed]
    assert all(r["kwargs"]["tensor_parallel_size"] == 2 for r in reports)
    assert all(r["torn_down"] == [True, True, True] and r["group_alive"] for r in reports)
