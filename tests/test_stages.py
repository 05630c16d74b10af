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
