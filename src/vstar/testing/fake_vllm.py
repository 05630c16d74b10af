"""A test stand-in for the `vllm` package, which needs a CUDA GPU: the parts `vstar.generate.vllm` uses.

`install()` puts the stand-in modules into `sys.modules` (`vllm`, `vllm.lora.request`, `vllm.distributed`), so the
real backend code runs around a fake engine: everything before the engine (frames, metadata, chat prompts, merged
weights, engine and sampling arguments) and after it (answers in request order, chunk files) is real. Tests use it
in-process (with pytest's `monkeypatch`) and in launched subprocesses (`torchrun` with gloo), which call `install()`
before building the backend:

```python
from vstar.testing import fake_vllm

fake_vllm.install()
```

The engine answers every prompt with its user text and the frames it got, returned in reverse order as vLLM may.
Each engine keeps a record of its life (`engine_records()`: arguments, prompts, when it was built, shut down and
its groups destroyed, and whether the launch's process group outlived them), for a launched process to report.
Like vLLM with `distributed_executor_backend="external_launcher"`, an engine under a launch needs the launch's
process group, builds its own groups inside it (a world group and a tensor parallel group per engine, with
`new_group`), and requires the processes of one engine to submit the same prompts (checked by gathering them in
the tensor parallel group). Its `parallel_state` tears down like vLLM's: `destroy_distributed_environment` also
destroys torch's default process group.
"""

from __future__ import annotations

import importlib.machinery
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeCompletion:
    text: str


@dataclass
class FakeRequestOutput:
    request_id: str
    outputs: list[FakeCompletion] = field(default_factory=list)


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeGroupCoordinator:
    """vLLM's `GroupCoordinator` in short: a device group and a CPU group per rank list, made with `new_group`."""

    def __init__(self, group_ranks: list[list[int]]):
        import torch.distributed as dist

        rank = dist.get_rank()
        for ranks in group_ranks:  # `new_group` is collective over the default group: every rank makes every group
            device_group, cpu_group = dist.new_group(ranks), dist.new_group(ranks, backend="gloo")
            if rank in ranks:
                self.ranks, self.device_group, self.cpu_group = ranks, device_group, cpu_group
        self.destroyed = False
        self.destroyed_at: float | None = None
        self.launch_group_alive: bool | None = None

    def destroy(self) -> None:
        import torch.distributed as dist

        dist.destroy_process_group(self.device_group)
        dist.destroy_process_group(self.cpu_group)
        self.destroyed, self.destroyed_at = True, time.time()
        self.launch_group_alive = dist.is_initialized()

    def record(self) -> dict[str, Any]:
        return {
            "ranks": self.ranks,
            "destroyed_at": self.destroyed_at,
            "launch_group_alive": self.launch_group_alive,
        }


def _module(name: str, package: bool = False) -> types.ModuleType:
    # A spec as an installed package has: libraries that probe for vLLM (`importlib.util.find_spec`, as TRL does
    # on import) find it instead of failing on a module without one.
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []
    return module


def _make_parallel_state() -> types.ModuleType:
    state = _module("vllm.distributed.parallel_state")
    state._WORLD = None
    state._TP = None

    def destroy_model_parallel():
        if state._TP is not None:
            state._TP.destroy()
        state._TP = None

    def destroy_distributed_environment():
        import torch.distributed as dist

        if state._WORLD is not None:
            state._WORLD.destroy()
        state._WORLD = None
        # What vLLM does too: the default group goes with it.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    state.destroy_model_parallel = destroy_model_parallel
    state.destroy_distributed_environment = destroy_distributed_environment
    return state


class FakeEngineCore:
    """`LLM.llm_engine.engine_core`: what the backend shuts down before training."""

    def __init__(self, llm: FakeLLM):
        self.llm = llm

    def shutdown(self) -> None:
        self.llm.shut_down, self.llm.shut_down_at = True, time.time()


class FakeLLM:
    """`vllm.LLM`: records its arguments and calls, and echoes every prompt."""

    instances: list[FakeLLM] = []
    fail_on_call: int | None = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.counter = 0
        self.shut_down = False
        self.built_at, self.shut_down_at = time.time(), None
        self.world_group: FakeGroupCoordinator | None = None
        self.tp_group: FakeGroupCoordinator | None = None
        self.llm_engine = types.SimpleNamespace(engine_core=FakeEngineCore(self))
        FakeLLM.instances.append(self)
        if kwargs.get("distributed_executor_backend") == "external_launcher":
            self._join_launch(kwargs["tensor_parallel_size"])

    def _join_launch(self, tp: int) -> None:
        import os

        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("external_launcher needs the launch's process group (torch.distributed)")
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            raise RuntimeError("external_launcher runs the engine in-process: VLLM_ENABLE_V1_MULTIPROCESSING=0")
        world = dist.get_world_size()
        if world % tp:
            raise RuntimeError(f"world size {world} is not divisible by tensor_parallel_size {tp}")
        state = sys.modules["vllm.distributed.parallel_state"]
        state._WORLD = FakeGroupCoordinator([list(range(world))])
        state._TP = FakeGroupCoordinator([list(range(i, i + tp)) for i in range(0, world, tp)])
        self.world_group, self.tp_group = state._WORLD, state._TP

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        self.calls.append({"prompts": prompts, "sampling_params": sampling_params, "lora_request": lora_request})
        if FakeLLM.fail_on_call is not None and len(self.calls) == FakeLLM.fail_on_call:
            raise RuntimeError("engine died")
        if self.tp_group is not None and len(self.tp_group.ranks) > 1:
            import torch.distributed as dist

            texts = [p["prompt"] for p in prompts]
            gathered: list[Any] = [None] * len(self.tp_group.ranks)
            dist.all_gather_object(gathered, texts, group=self.tp_group.cpu_group)
            if any(g != texts for g in gathered):
                raise RuntimeError("the processes of one engine submitted different prompts")
        outputs = []
        for prompt in prompts:
            user_text = prompt["prompt"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
            if "multi_modal_data" not in prompt:  # text only
                text = f"  {user_text} | text only\n"
            else:
                frames, metadata = prompt["multi_modal_data"]["video"]
                user_text = user_text.split("<|vision_end|>")[1]
                text = f"  {user_text} | {len(frames)} frames at {metadata['fps']:g} fps\n"
            outputs.append(FakeRequestOutput(str(self.counter), [FakeCompletion(text)]))
            self.counter += 1
        return outputs[::-1]

    def record(self) -> dict[str, Any]:
        """What happened to this engine, as JSON-ready values (times from `time.time()`)."""
        return {
            "kwargs": {k: v for k, v in self.kwargs.items() if k != "limit_mm_per_prompt"},
            "prompts": [p["prompt"] for call in self.calls for p in call["prompts"]],
            "lora_paths": sorted({c["lora_request"].lora_path for c in self.calls if c["lora_request"] is not None}),
            "built_at": self.built_at,
            "shut_down_at": self.shut_down_at,
            "groups": {
                "world": self.world_group and self.world_group.record(),
                "tensor_parallel": self.tp_group and self.tp_group.record(),
            },
        }


def engine_records() -> list[dict[str, Any]]:
    """`FakeLLM.record()` of every engine built since `install()`, in the order they were built."""
    return [llm.record() for llm in FakeLLM.instances]


def modules() -> dict[str, types.ModuleType]:
    """Fresh stand-in modules by name (`vllm`, `vllm.lora`, `vllm.lora.request`, `vllm.distributed`,
    `vllm.distributed.parallel_state`)."""
    vllm = _module("vllm", package=True)
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = _module("vllm.lora", package=True)
    request = _module("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    distributed = _module("vllm.distributed", package=True)
    distributed.parallel_state = _make_parallel_state()
    vllm.lora, lora.request, vllm.distributed = lora, request, distributed
    return {
        "vllm": vllm,
        "vllm.lora": lora,
        "vllm.lora.request": request,
        "vllm.distributed": distributed,
        "vllm.distributed.parallel_state": distributed.parallel_state,
    }


def install(monkeypatch=None) -> types.ModuleType:
    """Put the stand-in into `sys.modules` and reset the engine's records; returns the `vllm` module.

    Args:
        monkeypatch: pytest's fixture, to undo it after the test; without it the stand-in stays (subprocesses).
    """
    for name, module in modules().items():
        if monkeypatch is not None:
            monkeypatch.setitem(sys.modules, name, module)
        else:
            sys.modules[name] = module
    if monkeypatch is not None:
        monkeypatch.setattr(FakeLLM, "instances", [])
        monkeypatch.setattr(FakeLLM, "fail_on_call", None)
    else:
        FakeLLM.instances, FakeLLM.fail_on_call = [], None
    return sys.modules["vllm"]
