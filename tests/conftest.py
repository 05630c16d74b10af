"""Session fixtures: the loopback Hub, a small shapes dataset and tiny models, each built once."""

import os
from pathlib import Path

import hub_fixtures  # noqa: F401  (must run before the HF libraries are imported: it points them at the loopback Hub)
import pytest
from loop_helpers import SEED_CLIPS, WARM_ARCHITECTURES, small_cycle_config, training_config  # noqa: F401

pytest_plugins = ["hub_fixtures"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"

# Two cores: one torch thread per process keeps parallel work (decoding, a second rank) from thrashing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not available (it is only beside the development checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A small shapes source dataset: 48 train, 8 validation, 16 test clips."""
    from vstar.sources.shapes import ShapesConfig, build_shapes

    out = tmp_path_factory.mktemp("shapes")
    return build_shapes(ShapesConfig(output=str(out), num_train=48, num_validation=8, num_test=16, seed=3))


@pytest.fixture(scope="session")
def warm_models(tiny_model_dirs, shapes_dir, tmp_path_factory) -> dict[str, Path]:
    """Each tiny model after a short full finetune on seed clips, so it follows the answer template and hints."""
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task
    from vstar.train.sft import train

    root = tmp_path_factory.mktemp("warm")
    task = get_task("shapes")
    seed_dir = write_seed_dataset(root / "seed", seed_rows(shapes_dir, SEED_CLIPS, task, seed=0))
    warm = {}
    for arch in WARM_ARCHITECTURES:
        config = training_config(
            model_name_or_path=str(tiny_model_dirs[arch]),
            output_dir=str(root / arch),
            dataset=str(seed_dir),
            finetuning="full",
            max_steps=120,
            warmup_steps=10,
        )
        train(config)
        warm[arch] = root / arch
    warm["seed"] = seed_dir
    return warm


class TinyModelDirs(dict):
    """Tiny checkpoint directories by architecture, each built the first time a test asks for it."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, architecture: str) -> Path:
        from vstar.testing.tiny_models import build_tiny_vlm

        self[architecture] = build_tiny_vlm(self.root / architecture, architecture=architecture)
        return self[architecture]


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> TinyModelDirs:
    """Tiny randomly initialised checkpoints with processors, keyed by architecture (`qwen2_5_vl`, `qwen2_vl`,
    `qwen3_vl`, `llava_onevision`); a session builds only the ones its tests use."""
    return TinyModelDirs(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def view_run(warm_models, shapes_dir, tmp_path_factory) -> Path:
    """A real small run directory: two cycles of the loop on the tiny model (the viewer's tests show it)."""
    from vstar.cycle import CycleRunner

    run_dir = tmp_path_factory.mktemp("view-run")
    config = small_cycle_config(run_dir, shapes_dir, source_limit=16, num_cycles=2)
    train = training_config(model_name_or_path=str(warm_models["qwen2_5_vl"]), output_dir=str(run_dir / "train"))
    CycleRunner(config, train).run()
    return run_dir
