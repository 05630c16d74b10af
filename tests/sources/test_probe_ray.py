"""Probing a source's videos on a Ray cluster (a local Ray instance with 2 CPUs) gives the local build's rows."""

import json

import numpy as np
import pytest

from vstar.io import load_split
from vstar.sources.folder import build_folder
from vstar.video import write_video


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_folder_build_probed_on_ray_equals_the_local_build(local_ray, tmp_path):
    frames = np.random.default_rng(2).integers(0, 255, (8, 24, 32, 3), dtype=np.uint8)
    root = tmp_path / "clips"
    for i, name in enumerate(["yoga/a.mp4", "yoga/b.mp4", "surfing/c.mp4", "surfing/d.mp4"]):
        write_video(root / name, frames[: 4 + i], fps=8)
    (root / "yoga" / "broken.mp4").write_bytes(b"\x00" * 100)
    local = build_folder(videos=str(root), output=str(tmp_path / "local"), num_proc=2)
    remote = build_folder(videos=str(root), output=str(tmp_path / "ray"), num_proc=2, executor="ray")
    assert load_split(remote, "train").to_list() == load_split(local, "train").to_list()
    reports = [json.loads((out / "build_report.json").read_text()) for out in (local, remote)]
    assert reports[0]["skipped"] == reports[1]["skipped"] and reports[1]["rows_written"] == 4
