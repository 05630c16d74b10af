"""`vstar generate` and `vstar verify` as separate stages, through the command line."""

import json

import pyarrow.parquet as pq

from vstar.cli import main


def test_generate_then_verify(warm_models, shapes_dir, tmp_path, capsys):
    common = ["--dataset", str(shapes_dir), "--split", "test", "--task", "shapes", "--limit", "6"]
    generate = ["generate", "--model", str(warm_models["qwen2_5_vl"]), "--output-dir", str(tmp_path / "gen"),
                "--batch_size", "4", "--max_new_tokens", "24", "--chunk_size", "4", *common]  # fmt: skip
    main(generate)
    chunks = sorted((tmp_path / "gen").glob("direct-rank000-*.parquet"))
    assert len(chunks) == 2  # 6 answers in chunks of 4
    # Running it again answers nothing new.
    main(generate)
    assert sorted((tmp_path / "gen").glob("direct-*.parquet")) == chunks
    # The `--limit` sample is recorded beside the answers.
    assert len(json.loads((tmp_path / "gen" / "subset-test.json").read_text())["ids"]) == 6

    capsys.readouterr()
    main(["verify", "--generations", str(tmp_path / "gen"), "--output", str(tmp_path / "v.parquet"), *common])
    summary = json.loads(capsys.readouterr().out)
    assert summary["answers"] == 6
    assert summary["passed"] + sum(summary["failed_by_reason"].values()) == 6
    rows = pq.read_table(tmp_path / "v.parquet").to_pylist()
    assert len(rows) == 6 and sum(r["verification"]["passed"] for r in rows) == summary["passed"]
    assert all(json.loads(r["label"])["label"].endswith("square moving") for r in rows)


def test_stage_by_stage_reproduces_a_cycle(warm_models, shapes_dir, tmp_path):
    """generate (cycle 1) -> verify -> hinted retries of the failures -> assemble gives the loop's cycle-1 dataset."""
    from datasets import load_dataset
    from loop_helpers import SEED_CLIPS, small_cycle_config, training_config

    from vstar.cycle import CycleRunner

    model = warm_models["qwen2_5_vl"]
    run_dir = tmp_path / "run"
    cycle_config = small_cycle_config(run_dir, shapes_dir)
    runner = CycleRunner(cycle_config, training_config(model_name_or_path=str(model), output_dir=str(run_dir / "t")))
    loop_stats = runner._assemble(1)

    common = ["--dataset", str(shapes_dir), "--split", "train", "--task", "shapes", "--offset", str(SEED_CLIPS),
              "--limit", str(cycle_config.source_limit), "--subset_seed", "0"]  # fmt: skip
    gen, verified = str(tmp_path / "gen"), str(tmp_path / "direct.parquet")
    answers = ["--model", str(model), "--cycle", "1", "--batch_size", str(cycle_config.generation_batch_size),
               "--max_new_tokens", str(cycle_config.max_new_tokens), "--output_dir", gen]  # fmt: skip
    main(["generate", *answers, *common])
    main(["verify", "--generations", gen, "--output", verified, *common])
    main(["generate", *answers, "--attempt", "rationalized", "--retry_failed", verified, *common])
    main(["assemble", "--generations", gen, "--cycle", "1", "--output", str(tmp_path / "ds"), *common])

    for config in ("default", "rejected"):
        loop = load_dataset(str(run_dir / "cycle-1" / "dataset"), config, split="train").to_list()
        staged = load_dataset(str(tmp_path / "ds"), config, split="train").to_list()
        keys = ("id", "question", "answer", "rationalized", "cycle", "messages")
        assert [{k: r[k] for k in keys} for r in staged] == [{k: r[k] for k in keys} for r in loop]
    assert loop_stats["accepted_rationalized"] > 0  # the hinted path was exercised
    assert (tmp_path / "ds" / "README.md").is_file()


def test_retry_failed_needs_the_rationalized_attempt(shapes_dir, tmp_path):
    import pytest

    with pytest.raises(SystemExit) as stop:
        main(["generate", "--model", "m", "--dataset", str(shapes_dir), "--task", "shapes", "--retry_failed", "x"])
    assert stop.value.code == 2
