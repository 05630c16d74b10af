"""The Python API: `import vstar` is light, its entry points resolve, docs/python_api.md and docstring examples run."""

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vstar

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python_api.md"
NOT_RUN = "<!-- not run"
# Modules whose `>>>` examples are self-contained (no model, no network, no files beyond a temporary directory).
DOCTEST_MODULES = ("vstar.assemble", "vstar.cards", "vstar.lineage")


def test_import_vstar_loads_no_heavy_library():
    code = (
        "import sys, vstar; print(sorted(m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_every_export_resolves_and_unknown_names_fail():
    for name in vstar.__all__:
        assert getattr(vstar, name) is not None, name
    assert vstar.CycleRunner.__module__ == "vstar.cycle" and "run_cycle" in dir(vstar)
    with pytest.raises(AttributeError, match="no attribute 'run_cycles'"):
        vstar.run_cycles  # noqa: B018


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="num_cycle .*did you mean num_cycles"):
        vstar.cycle_configs(num_cycle=2)
    with pytest.raises(ValueError, match="`shapes` source setting.*num_trains"):
        vstar.build_source("shapes", output="unused", num_trains=3)
    with pytest.raises(FileNotFoundError, match="Recipe nowhere.yaml not found"):
        vstar.cycle_configs("nowhere.yaml")
    cycle, train = vstar.cycle_configs(
        ROOT / "recipes/demo/config_shapes_tiny.yaml", run_dir="runs/x", num_cycles=1, learning_rate=1e-3
    )
    assert (cycle.task, cycle.num_cycles, train.learning_rate, train.lora_r) == ("shapes", 1, 1e-3, 32)


def python_blocks(text: str) -> list[str]:
    """The page's ```python blocks, without those marked `<!-- not run ... -->` on the line before."""
    blocks = []
    for match in re.finditer(r"(?m)^```python\n(.*?)^```", text, re.S):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].startswith(NOT_RUN):
            continue
        blocks.append(match.group(1))
    return blocks


def test_the_python_api_page_runs(hub_env, tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    namespace: dict = {"__name__": "python_api_page"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    # What the page says happened, happened.
    assert namespace["history"][0]["cycle"] == 0 and "accuracy" in namespace["results"]["metrics"]
    # Six clips, each failed directly and again with the hint.
    assert len(namespace["rejected"]) == 12 and "@sha256:" in namespace["rejected"][0]["generator"]
    assert hub_env.api.dataset_info("my-org/shapes-source").sha == namespace["sha"]


def test_docstring_examples_run():
    for name in DOCTEST_MODULES:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, (name, result)


def test_every_module_with_examples_runs_them_or_skips_them():
    listed = {ROOT / "src" / (name.replace(".", "/") + ".py") for name in DOCTEST_MODULES}
    for path in (ROOT / "src" / "vstar").rglob("*.py"):
        examples = [line for line in path.read_text().splitlines() if line.lstrip().startswith(">>> ")]
        if examples and path not in listed:
            assert all("doctest: +SKIP" in line for line in examples), f"{path}: add it to DOCTEST_MODULES"
