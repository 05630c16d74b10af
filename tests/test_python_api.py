"""The Python API: `import vstar` is light, its entry points resolve, docs/python_api.md and docstring examples run."""

import ast
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
# Modules whose ```python docstring examples are self-contained; an expression ending in `# <literal>` must give it.
FENCED_EXAMPLE_MODULES = (
    "vstar.registry",
    "vstar.rundir",
    "vstar.subsets",
    "vstar.tasks",
    "vstar.tasks.action_quality",
    "vstar.tasks.action_recognition",
    "vstar.tasks.base",
    "vstar.tasks.generic",
    "vstar.tasks.multiple_choice",
    "vstar.verify",
    "vstar.verify.answer",
    "vstar.verify.categorical",
    "vstar.verify.choice",
    "vstar.verify.composite",
    "vstar.verify.numeric",
    "vstar.verify.sequence",
)


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


def fenced_examples(module) -> list[str]:
    """The ```python blocks of a module's docstrings (module, classes, functions), as `help()` shows them."""
    tree = ast.parse(Path(module.__file__).read_text())
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)))]
    docs = [ast.get_docstring(n) or "" for n in nodes]
    return [m.group(1) for doc in docs for m in re.finditer(r"(?m)^```python\n(.*?)^```", doc, re.S)]


def run_example(code: str, where: str) -> int:
    """Run an example statement by statement; returns how many `expression  # literal` results it checked."""
    namespace: dict = {}
    lines = code.splitlines()
    checked = 0
    for statement in ast.parse(code).body:
        comment = re.search(r"#\s*(.+)$", lines[statement.end_lineno - 1])
        expected = _literal(comment.group(1)) if comment and isinstance(statement, ast.Expr) else _NOT_LITERAL
        if expected is _NOT_LITERAL:
            exec(compile(ast.Module([statement], []), where, "exec"), namespace)
            continue
        value = eval(compile(ast.Expression(statement.value), where, "eval"), namespace)
        assert value == expected, f"{where}: {ast.unparse(statement)} gives {value!r}, the example says {expected!r}"
        checked += 1
    return checked


_NOT_LITERAL = object()


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return _NOT_LITERAL


@pytest.mark.parametrize("name", FENCED_EXAMPLE_MODULES)
def test_fenced_docstring_examples_run_and_give_what_they_say(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = fenced_examples(importlib.import_module(name))
    assert examples, f"{name} has no example"
    for i, code in enumerate(examples):
        run_example(code, f"{name} example {i + 1}")
