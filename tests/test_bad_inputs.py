"""A corpus of bad inputs through every command: each gives one line naming the input (exit status 2) or is skipped
and reported, never a traceback.

The inputs are made here: truncated, random-bytes, empty, zero-frame, audio-only and fake-header clips; broken tables;
broken pickles; broken recipes; bad flags; missing folders. Most cases run `vstar.cli.main` in this process (fast);
a few run `python -m vstar.cli` to prove the exit status and the absence of a traceback in a real process.

Run: `python -m pytest tests/test_bad_inputs.py -q -s` (`-s` prints the counts).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from vstar.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "recipes" / "demo" / "config_shapes_tiny.yaml"
RNG = np.random.default_rng(7)
OUTCOMES: Counter = Counter()


# --- the bad clips


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Commands write their default outputs (results.json, verified.parquet, subset records) where they run.
    monkeypatch.chdir(tmp_path)


def _good_clip(path: Path, seed: int = 0) -> Path:
    from vstar.video import write_video

    frames = np.random.default_rng(seed).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=8)


def _zero_frame_clip(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()  # a header and a video stream, but not one frame
    container.close()
    return path


def _audio_only_clip(path: Path) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=16000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in [*stream.encode(frame), *stream.encode()]:
        container.mux(packet)
    container.close()
    return path


def bad_clips(folder: Path) -> dict[str, Path]:
    """One file of each kind of broken clip."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _good_clip(folder / "good-source.mp4").read_bytes()
    clips = {
        "truncated": good[: len(good) // 3],
        "random-bytes": RNG.bytes(4096),
        "empty": b"",
        "fake-header": good[:32] + RNG.bytes(2048),  # a real `ftyp` box, then noise
    }
    paths = {}
    for kind, data in clips.items():
        paths[kind] = folder / f"{kind}.mp4"
        paths[kind].write_bytes(data)
    paths["zero-frame"] = _zero_frame_clip(folder / "zero-frame.mp4")
    paths["audio-only"] = _audio_only_clip(folder / "audio-only.mp4")
    (folder / "good-source.mp4").unlink()
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    clips = bad_clips(root / "clips")
    for kind, path in clips.items():  # one class folder holding only one bad clip
        target = root / "folders" / kind / "waving" / path.name
        target.parent.mkdir(parents=True)
        target.write_bytes(path.read_bytes())
    mixed = root / "mixed"
    for i in range(2):
        _good_clip(mixed / "waving" / f"good{i}.mp4", i)
    for path in clips.values():
        (mixed / "waving" / path.name).write_bytes(path.read_bytes())
    return root


# --- running a case


def error_lines(err: str) -> list[str]:
    # A progress bar ends with `\r`, so a message printed after it shares its line of stderr.
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("vstar")]


def classify(code: int, err: str, names: list[str]) -> str:
    """`clear` (exit 2, one line naming the input), `unclear` (exit 2, the line names none of `names`),
    `traceback`, or `accepted` (exit 0)."""
    if "Traceback" in err or code not in (0, 2):
        return "traceback"
    if code == 0:
        return "accepted"
    lines = error_lines(err)
    if len(lines) == 1 and any(name in lines[0] for name in names):
        return "clear"
    return "unclear"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001  (an escaped exception is a traceback for the user)
        import traceback

        return 1, "Traceback\n" + traceback.format_exc()
    return code, capsys.readouterr().err


@dataclass
class Case:
    """A command line with a bad input and the words its message must contain (the input's name)."""

    id: str
    argv: list
    names: list[str]
    xfail: str | None = None
    extra: dict = field(default_factory=dict)


def check(case: Case, capsys) -> None:
    code, err = run_cli(case.argv, capsys)
    outcome = classify(code, err, case.names)
    OUTCOMES["inputs"] += 1
    OUTCOMES[outcome] += 1
    if os.environ.get("VSTAR_CORPUS_LOG"):  # every message, for reading them side by side
        with open(os.environ["VSTAR_CORPUS_LOG"], "a") as log:
            log.write(json.dumps({"case": case.id, "outcome": outcome, "lines": error_lines(err)}) + "\n")
    if outcome != "clear" and case.xfail:
        pytest.xfail(f"{case.xfail} (got {outcome}: {err.strip()[-300:]})")
    assert outcome == "clear", f"{case.id}: {outcome}, exit {code}\n{err[-2000:]}"


# --- builders: clips, folders, tables, pickles


CLIP_KINDS = ["truncated", "random-bytes", "empty", "fake-header", "zero-frame", "audio-only"]


@pytest.mark.parametrize("kind", CLIP_KINDS)
def test_a_folder_of_only_bad_clips_is_one_line(kind, corpus, tmp_path, capsys):
    folder = corpus / "folders" / kind
    argv = ["build", "folder", "--videos", folder, "--output", tmp_path / "out"]
    check(Case(kind, argv, [str(folder), f"waving/{kind}.mp4"]), capsys)


def test_bad_clips_beside_good_ones_are_skipped_and_reported(corpus, tmp_path, capsys):
    code, err = run_cli(["build", "folder", "--videos", corpus / "mixed", "--output", tmp_path / "out"], capsys)
    assert code == 0 and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    skipped = {Path(str(entry["row"])).name for entry in report["skipped"]}
    assert {f"{kind}.mp4" for kind in CLIP_KINDS} <= {Path(s).name if "." in s else s + ".mp4" for s in skipped}
    OUTCOMES["inputs"] += len(CLIP_KINDS)
    OUTCOMES["skip"] += len(CLIP_KINDS)


def _table(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def table_cases(tmp_path: Path, clip: Path) -> list[Case]:
    good_row = f"{clip},waving,0.0,1.0\n"
    header = "video,label,start,end\n"
    tables = {
        "latin-1": (".csv", (header + f"{clip},caf\xe9,0.0,1.0\n").encode("latin-1"), None),
        "header-only": (".csv", header, None),
        "empty": (".csv", "", None),
        "duplicated-header": (".csv", "video,label,label,end\n" + good_row, None),
        "missing-video-column": (".csv", "path,label\nx.mp4,waving\n", None),
        "start-after-end": (".csv", header + f"{clip},waving,5.0,1.0\n", None),
        "random-bytes-parquet": (".parquet", RNG.bytes(600), None),
        "broken-jsonl": (".jsonl", json.dumps({"video": str(clip), "label": "waving"}) + "\n{not json\n", None),
        "missing-file": (".csv", None, None),
    }
    cases = []
    for name, (suffix, data, xfail) in tables.items():
        path = tmp_path / f"{name}{suffix}"
        if data is not None:
            _table(tmp_path, path.name, data)
        argv = ["build", "table", "--annotations", path, "--label_columns", "label", "--output", tmp_path / name]
        if suffix == ".csv" and name not in ("missing-video-column", "empty", "missing-file"):
            argv += ["--start_column", "start", "--end_column", "end"]
        cases.append(Case(name, argv, [path.name], xfail))
    return cases


TABLE_CASES = [
    "latin-1",
    "header-only",
    "empty",
    "duplicated-header",
    "missing-video-column",
    "start-after-end",
    "random-bytes-parquet",
    "broken-jsonl",
    "missing-file",
]


@pytest.mark.parametrize("name", TABLE_CASES)
def test_broken_tables(name, tmp_path, capsys):
    clip = _good_clip(tmp_path / "clip.mp4")
    (case,) = [c for c in table_cases(tmp_path, clip) if c.id == name]
    check(case, capsys)


def _finediving_pickles(folder: Path) -> None:
    """The five FineDiving pickles for one clip (the released layout: protocol 3, numpy values)."""
    folder.mkdir(parents=True)
    key = ("01", 1)
    labels = np.array([4, 4, 25, 25, 36])
    coarse = {key: {"action_type": "407c", "start_frame": 0, "end_frame": 4, "dive_score": 65.6, "difficulty": 3.2,
                    "judge_scores": [7.0, 6.5, 7.0]}}  # fmt: skip
    fine = {key: {"action_type": "407c", "dive_score": 65.6, "difficulty": 3.2, "frames_labels": labels,
                  "steps_transit_frames": np.array([2]), "sub-action_types": {4: "Inward", 25: "3.5 Soms.Tuck",
                                                                              36: "Entry"}}}  # fmt: skip
    for name, obj in [("FineDiving_coarse_annotation.pkl", coarse), ("FineDiving_fine-grained_annotation.pkl", fine),
                      ("Sub_action_Types_Table.pkl", {4: "Inward", 25: "3.5 Soms.Tuck", 36: "Entry"}),
                      ("train_split.pkl", [key]), ("test_split.pkl", [])]:  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(obj, protocol=3))


class _Runs:
    def __reduce__(self):
        import os

        return os.system, ("echo owned",)


PICKLE_DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "random-bytes": lambda data: RNG.bytes(300),
    "empty": lambda data: b"",
    "code-execution": lambda data: pickle.dumps(_Runs()),
    "wrong-structure": lambda data: pickle.dumps(["not", "a", "mapping"], protocol=3),
    "text-file": lambda data: b"key,value\n1,2\n",
}


@pytest.mark.parametrize("damage", sorted(PICKLE_DAMAGE))
def test_broken_pickles(damage, tmp_path, capsys):
    _finediving_pickles(tmp_path / "ann")
    (tmp_path / "frames").mkdir()
    coarse = tmp_path / "ann" / "FineDiving_coarse_annotation.pkl"
    coarse.write_bytes(PICKLE_DAMAGE[damage](coarse.read_bytes()))
    argv = ["build", "finediving", "--annotations", tmp_path / "ann", "--frames", tmp_path / "frames",
            "--output", tmp_path / "out"]  # fmt: skip
    check(Case(damage, argv, [coarse.name]), capsys)


# --- recipes and flags through the loop's commands


RECIPES = {
    "missing": None,
    "a-folder": "FOLDER",
    "invalid-yaml": "num_cycles: [1, 2\ntask: shapes\n",
    "a-list": "- num_cycles: 1\n",
    "latin-1": "task: caf\xe9\n".encode("latin-1"),
    "unknown-key": "num_cylces: 2\n",
    "list-for-a-number": "num_cycles: [1]\n",
    "text-for-a-number": "num_cycles: three\n",
    "env-not-a-mapping": "env: 3\n",
}


@pytest.mark.parametrize("command", ["cycle", "eval", "train", "generate"])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_broken_recipes(name, command, tmp_path, capsys):
    path = tmp_path / f"{name}.yaml"
    content = RECIPES[name]
    if content == "FOLDER":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    names = [path.name, "num_cylces", "num_cycles", "env"]
    if name == "text-for-a-number" and command in ("eval", "generate"):
        names = [path.name, "num_cycles"]  # a key of another command: skipped, so the missing model is the error
    check(Case(name, [command, "--config", path], [*names, "model", "dataset"]), capsys)


def flag_cases(shapes_dir: Path, model: Path, tmp_path: Path) -> list[Case]:
    loop = ["cycle", "--config", DEMO_RECIPE, "--source_dataset", shapes_dir, "--model_name_or_path", model,
            "--run_dir", tmp_path / "run"]  # fmt: skip
    stage = ["--model", model, "--dataset", shapes_dir, "--task", "shapes", "--split", "test"]
    return [
        Case("typo", [*loop, "--num_cycle", "2"], ["--num_cycle"]),
        Case("missing-value", [*loop, "--num_cycles"], ["--num_cycles"]),
        Case("not-a-number", [*loop, "--generation_batch_size", "many"], ["--generation_batch_size"]),
        Case("not-a-boolean", [*loop, "--rationalize", "maybe"], ["--rationalize"]),
        Case("negative-cycles", [*loop, "--num_cycles", "-1"], ["num_cycles"]),
        Case("negative-offset", [*loop, "--source_offset", "-1"], ["source_offset"]),
        Case("zero-batch", [*loop, "--generation_batch_size", "0"], ["generation_batch_size"]),
        Case("zero-chunk", [*loop, "--generation_chunk_size", "0"], ["generation_chunk_size"]),
        Case("zero-frames", [*loop, "--num_frames", "0"], ["num_frames"]),
        Case("zero-train-batch", [*loop, "--per_device_train_batch_size", "0"], ["per_device_train_batch_size"]),
        Case("bad-finetuning", [*loop, "--finetuning", "qlora"], ["finetuning"]),
        Case("bad-lora-target", [*loop, "--lora_target", "*proj"], ["lora_target"]),
        Case("unknown-task", [*loop, "--task", "shape"], ["shape"]),
        Case("unknown-backend", [*loop, "--generation_backend", "tgi"], ["tgi"]),
        Case("bad-task-options", [*loop, "--task_options", "{oops"], ["task_options"]),
        Case(
            "offset-past-the-data",
            [*loop, "--source_offset", "100000", "--num_cycles", "1"],
            ["source_offset", "100000"],
        ),
        Case("eval-zero-batch", ["eval", *stage, "--batch_size", "0"], ["batch_size"]),
        Case("eval-zero-limit", ["eval", *stage, "--limit", "0"], ["limit"]),
        Case("eval-unknown-task", ["eval", *stage[:-4], "--task", "recognition"], ["recognition"]),
        Case("eval-wrong-split", ["eval", *stage[:-2], "--split", "tset"], ["tset"]),
        Case("generate-zero-chunk", ["generate", *stage, "--chunk_size", "0"], ["chunk_size"]),
        Case("generate-bad-attempt", ["generate", *stage, "--attempt", "hint"], ["attempt"]),
        Case("verify-bad-attempt", ["verify", *stage[2:], "--attempt", "hint"], ["attempt"]),
        Case("train-zero-frames", ["train", "--config", DEMO_RECIPE, "--num_frames", "0"], ["num_frames"]),
        Case(
            "build-zero-frames", ["build", "shapes", "--output", tmp_path / "s", "--num_frames", "0"], ["num_frames"]
        ),
        Case("build-unknown-flag", ["build", "shapes", "--num_trian", "3"], ["--num_trian"]),
    ]


FLAG_CASES = [c.id for c in flag_cases(Path("d"), Path("m"), Path("t"))]


@pytest.mark.parametrize("name", FLAG_CASES)
def test_bad_flags(name, shapes_dir, tiny_model_dirs, tmp_path, capsys):
    (case,) = [c for c in flag_cases(shapes_dir, tiny_model_dirs["qwen2_5_vl"], tmp_path) if c.id == name]
    check(case, capsys)


def _empty_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing_cases(shapes_dir: Path, model: Path, tmp_path: Path) -> list[Case]:
    nope = tmp_path / "nope"
    stage = ["--task", "shapes", "--split", "test"]
    return [
        Case("eval-model", ["eval", "--model", nope, "--dataset", shapes_dir, *stage], [str(nope)]),
        Case("eval-dataset", ["eval", "--model", model, "--dataset", nope, *stage], [str(nope)]),
        Case(
            "eval-adapter", ["eval", "--model", model, "--dataset", shapes_dir, "--adapter", nope, *stage], [str(nope)]
        ),  # fmt: skip
        Case("eval-empty-folder-dataset", ["eval", "--model", model, "--dataset", tmp_path, *stage], [str(tmp_path)]),
        Case("generate-model", ["generate", "--model", nope, "--dataset", shapes_dir, *stage], [str(nope)]),
        Case(
            "verify-generations",
            ["verify", "--generations", nope, "--dataset", shapes_dir, *stage],
            [str(nope)],
        ),  # fmt: skip
        Case(
            "verify-answers-file",
            ["verify", "--answers", tmp_path / "nope.jsonl", "--dataset", shapes_dir, *stage],
            ["nope.jsonl"],
        ),  # fmt: skip
        Case(
            "verify-no-answers",
            ["verify", "--generations", _empty_folder(tmp_path / "no-answers"), "--dataset", shapes_dir, *stage],
            ["no-answers", "no answers"],
        ),  # fmt: skip
        Case(
            "train-dataset",
            ["train", "--config", DEMO_RECIPE, "--model_name_or_path", model, "--dataset", nope],
            [str(nope)],
        ),  # fmt: skip
        Case(
            "train-model",
            ["train", "--config", DEMO_RECIPE, "--model_name_or_path", nope, "--dataset", shapes_dir],
            [str(nope)],
        ),  # fmt: skip
        Case(
            "cycle-source",
            ["cycle", "--config", DEMO_RECIPE, "--model_name_or_path", model, "--source_dataset", nope],
            [str(nope)],
        ),  # fmt: skip
        Case("push-run-dir", ["push", nope, "--dataset_repo", "o/d", "--model_repo", "o/m"], [str(nope)]),
        Case("build-folder", ["build", "folder", "--videos", nope, "--output", tmp_path / "o"], [str(nope)]),
        Case(
            "build-kinetics",
            ["build", "kinetics", "--annotations", nope / "train.csv", "--videos", nope, "--output", tmp_path / "o"],
            [str(nope)],
        ),  # fmt: skip
        Case(
            "build-finediving",
            ["build", "finediving", "--annotations", nope, "--frames", nope, "--output", tmp_path / "o"],
            [str(nope)],
        ),  # fmt: skip
    ]


MISSING_CASES = [c.id for c in missing_cases(Path("d"), Path("m"), Path("t"))]


@pytest.mark.parametrize("name", MISSING_CASES)
def test_missing_folders(name, shapes_dir, tiny_model_dirs, tmp_path, capsys):
    (case,) = [c for c in missing_cases(shapes_dir, tiny_model_dirs["qwen2_5_vl"], tmp_path) if c.id == name]
    check(case, capsys)


# --- the Hub and damaged datasets


@pytest.mark.parametrize("what", ["model", "dataset"])
def test_hub_ids_that_do_not_exist(what, hub_env, shapes_dir, tiny_model_dirs, capsys):
    values = {"model": tiny_model_dirs["qwen2_5_vl"], "dataset": shapes_dir, what: f"vstar-org/no-such-{what}"}
    argv = ["eval", "--model", values["model"], "--dataset", values["dataset"], "--task", "shapes"]
    check(Case(f"hub-{what}", argv, [f"vstar-org/no-such-{what}"]), capsys)


def test_a_dataset_whose_parquet_is_damaged(shapes_dir, tiny_model_dirs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "source"
    shutil.copytree(shapes_dir, broken)
    (split,) = (broken / "data").glob("test-*.parquet")
    split.write_bytes(RNG.bytes(700))
    argv = ["eval", "--model", tiny_model_dirs["qwen2_5_vl"], "--dataset", broken, "--task", "shapes"]
    check(Case("damaged-parquet", argv, [str(broken), split.name]), capsys)


# --- clips that break after the dataset was built: skipped at generation time, the pass goes on


def test_clips_broken_after_the_build_are_skipped_by_generate(tiny_model_dirs, tmp_path, capsys):
    from vstar.generate.base import read_generations, read_skipped

    clips = tmp_path / "clips"
    for i in range(len(CLIP_KINDS) + 2):
        _good_clip(clips / "waving" / f"c{i}.mp4", i)
    code, err = run_cli(["build", "folder", "--videos", clips, "--output", tmp_path / "src"], capsys)
    assert code == 0, err
    for i, path in enumerate(bad_clips(tmp_path / "bad").values()):
        (clips / "waving" / f"c{i}.mp4").write_bytes(path.read_bytes())  # the dataset still points at these files
    out = tmp_path / "gen"
    argv = ["generate", "--model", tiny_model_dirs["qwen2_5_vl"], "--dataset", tmp_path / "src", "--task",
            "action_recognition", "--output_dir", out, "--max_new_tokens", "4", "--batch_size", "4"]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert len(read_generations(out, "direct")) == 2
    assert len(read_skipped(out, "direct")) == len(CLIP_KINDS)
    OUTCOMES["inputs"] += len(CLIP_KINDS)
    OUTCOMES["skip"] += len(CLIP_KINDS)


# --- the same in a real process: exit status 2, one line, no traceback


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["build", "table", "--annotations", "{tmp}/nope.csv", "--label_columns", "label"], "nope.csv"),
    ],
)
def test_in_a_real_process(argv, expected, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-m", "vstar.cli", *argv], capture_output=True, text=True, timeout=300)
    OUTCOMES["inputs"] += 1
    outcome = classify(done.returncode, done.stderr, [expected.replace("{tmp}", str(tmp_path))])
    OUTCOMES[outcome] += 1
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert outcome == "clear", done.stderr


def test_zz_counts():
    """The corpus's figures (printed with `-s`): every input tried gave a clear line or a reported skip."""
    print("\nbad-input corpus:", json.dumps(dict(OUTCOMES), sort_keys=True))
    assert OUTCOMES["traceback"] == 0
