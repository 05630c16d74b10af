"""Dataset and model cards rendered from the Jinja templates in `dataset_cards/`.

A card is YAML metadata (what the Hub and `load_dataset` read: configs, license, tags, model-index) followed
by a Markdown body rendered from a template.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml

DEFAULT_LICENSE = "apache-2.0"


def _template_text(name: str) -> str:
    return (resources.files("vstar.dataset_cards") / name).read_text("utf-8")


def _environment() -> jinja2.Environment:
    from vstar.lineage import vstar_version

    loader = jinja2.FunctionLoader(_template_text)
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["vstar_version"] = vstar_version()
    return env


def video_star_citation() -> str:
    """The BibTeX of the Video-STaR paper, in every card of a run."""
    return _template_text("video_star.bib.j2")


def _card_settings(config: Any) -> dict[str, Any]:
    """The licence and citation a run's cards carry (`card_license`, `card_citation` of its `CycleConfig`)."""
    return {
        "license": getattr(config, "card_license", None) or DEFAULT_LICENSE,
        "citation": getattr(config, "card_citation", None),
    }


def _lineage_context(lineage: Any, generator: str | None = None) -> dict[str, Any]:
    """What `_lineage.md.j2` renders: the lineage (or `None`), its table, the citations."""
    return {
        "lineage": lineage,
        "lineage_table": markdown_table(lineage.table()) if lineage is not None else None,
        "generator": generator,
        "video_star_citation": video_star_citation(),
        "license_note": "a setting of the run: `card_license`; the videos keep their own licence",
    }


def render_card(template: str, metadata: dict[str, Any], **context: Any) -> str:
    """Render `dataset_cards/<template>` with `context`, behind the YAML `metadata` header."""
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    body = _environment().get_template(template).render(metadata=metadata, **context)
    return f"---\n{header}---\n\n{body.strip()}\n"


def write_card(path: str | Path, template: str, metadata: dict[str, Any], **context: Any) -> Path:
    """Render `dataset_cards/<template>` (see `render_card`) into `path`."""
    path = Path(path)
    path.write_text(render_card(template, metadata, **context), encoding="utf-8")
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A Markdown table of dict rows (floats to 4 significant digits, `None` as an em dash).

    >>> rows = [{"cycle": 1, "yield": 0.123456, "note": None}, {"cycle": 2, "yield": 0.5, "note": "a|b"}]
    >>> print(markdown_table(rows))
    | cycle | yield | note |
    |---|---|---|
    | 1 | 0.1235 | — |
    | 2 | 0.5 | a\\|b |
    """
    if not rows:
        return "_none_"
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _history_table(history: list[dict[str, Any]]) -> str:
    columns = [
        "cycle",
        "generated",
        "accepted_direct",
        "accepted_rationalized",
        "yield",
        "heldout_accuracy",
        "control_heldout_accuracy",
    ]
    return markdown_table([{c: h.get(c) for c in columns} for h in history], columns)


def write_instruction_card(
    dataset_dir: str | Path,
    stats: dict[str, Any],
    config: Any,
    history: list[dict[str, Any]],
    repo_id: str | None = None,
    revision: str | None = None,
    train_config: Any = None,
) -> Path:
    """The README.md of a cycle's instruction dataset directory (configs `default` and `rejected`).

    Args:
        dataset_dir: the cycle's dataset directory.
        stats: the assembly counts (`assemble_cycle`), `generator` included.
        config: the run's `CycleConfig` (source, task, `card_license`, `card_citation`).
        history: the per-cycle metrics so far.
        repo_id, revision: where the dataset is (or will be) on the Hub, for the loading snippet.
        train_config: the run's training config; with it the card gets its lineage section (base model, source
            commit, vstar version, resolved settings).
    """
    from vstar.assemble import instruction_configs
    from vstar.io import dataset_info_yaml
    from vstar.lineage import run_lineage
    from vstar.schema import INSTRUCTION_FEATURES

    dataset_dir = Path(dataset_dir)
    counts = {"default": {"train": stats["accepted"]}, "rejected": {"train": stats["rejected"]}}
    settings = _card_settings(config)
    lineage = run_lineage(config, train_config) if train_config is not None else None
    metadata = {
        "pretty_name": f"Video-STaR cycle {stats['cycle']} instruction data",
        "license": settings["license"],
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "video-star", f"cycle-{stats['cycle']}"],
        "configs": instruction_configs(),
        "dataset_info": dataset_info_yaml(dataset_dir, INSTRUCTION_FEATURES, counts),
    }
    reasons = [{"reason": k, "count": v} for k, v in stats.get("rejected_by_reason", {}).items()]
    return write_card(
        dataset_dir / "README.md",
        "instruction_dataset.md.j2",
        metadata,
        stats=stats,
        source_dataset=config.source_dataset,
        source_revision=config.source_revision,
        task=config.task,
        task_options=config.task_options,
        repo_id=repo_id or str(dataset_dir),
        revision=revision,
        reasons_table=markdown_table(reasons),
        history_table=_history_table(history) if history else None,
        citation=settings["citation"],
        **_lineage_context(lineage, stats.get("generator")),
    )


def write_model_card(
    model_dir: str | Path,
    entry: dict[str, Any],
    history: list[dict[str, Any]],
    cycle_config: Any,
    train_config: Any,
    dataset_dir: str | Path,
    repo_id: str | None = None,
    revision: str | None = None,
    dataset_repo: str | None = None,
    dataset_revision: str | None = None,
    base_repo: tuple[str, str] | None = None,
) -> Path:
    """The README.md of a cycle's model directory, with held-out results in `model-index` and its lineage.

    Args:
        model_dir: the cycle's model (adapter) directory.
        entry: the cycle's metrics.
        history: the per-cycle metrics so far.
        cycle_config: the run's `CycleConfig` (source, task, `card_license`, `card_citation`).
        train_config: the run's training config (base model, hyperparameters).
        dataset_dir: the instruction dataset the model was trained on.
        repo_id, revision: where the model is (or will be) on the Hub, for the usage snippet.
        dataset_repo, dataset_revision: the pushed instruction dataset and its commit.
        base_repo: `(hub_id, sha)` the usage snippet loads the base model from (`lineage.publish_base_model`);
            default the configured base as is.
    """
    from vstar.lineage import run_lineage

    model_dir = Path(model_dir)
    lora = train_config.finetuning == "lora"
    settings = _card_settings(cycle_config)
    lineage = run_lineage(
        cycle_config, train_config, model_dir, base_repo, adapter_kind="adapter" if lora else "finetuned model"
    )
    base_id, base_id_revision = base_repo or (train_config.model_name_or_path, None)
    metadata: dict[str, Any] = {
        "base_model": base_id,
        "library_name": "peft" if lora else "transformers",
        "license": settings["license"],
        "pipeline_tag": "video-text-to-text",
        "tags": ["video", "vstar", "video-star", f"cycle-{entry['cycle']}", "trl", "sft"],
        "datasets": [dataset_repo or str(dataset_dir)],
    }
    if entry.get("heldout_accuracy") is not None:
        dataset_entry: dict[str, Any] = {
            "type": cycle_config.source_dataset,
            "name": f"{cycle_config.source_dataset} ({cycle_config.eval_split})",
            "split": cycle_config.eval_split,
        }
        # The resolved commit (or content hash) of the evaluation data, not the branch name it was asked by.
        dataset_entry["revision"] = lineage.source_commit
        metadata["model-index"] = [
            {
                "name": repo_id or model_dir.name,
                "results": [
                    {
                        "task": {"type": "video-text-to-text", "name": cycle_config.task},
                        "dataset": dataset_entry,
                        "metrics": heldout_metrics(entry),
                    }
                ],
            }
        ]
    hyper = {
        k: getattr(train_config, k)
        for k in (
            "finetuning",
            "lora_target",
            "lora_r",
            "lora_alpha",
            "learning_rate",
            "num_train_epochs",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "lr_scheduler_type",
            "warmup_steps",
            "seed",
            "num_frames",
        )
    }
    hyper["cycle_init"] = cycle_config.cycle_init
    results = [
        {"metric": k, "value": entry.get(k)}
        for k in ("heldout_accuracy", "heldout_parse_rate", "control_heldout_accuracy")
    ] + [{"metric": f"heldout {k}", "value": v} for k, v in (entry.get("heldout") or {}).items() if k != "accuracy"]
    return write_card(
        model_dir / "README.md",
        "model.md.j2",
        metadata,
        title=f"Video-STaR cycle {entry['cycle']} ({cycle_config.task})",
        kind="A LoRA adapter" if lora else "A finetuned model",
        entry=entry,
        lora=lora,
        base_model=train_config.model_name_or_path,
        base_id=base_id,
        base_id_revision=base_id_revision,
        dataset=dataset_repo or str(dataset_dir),
        dataset_revision=dataset_revision,
        repo_id=repo_id or str(model_dir),
        revision=revision,
        results_table=markdown_table(results),
        history_table=_history_table(history),
        plot=(model_dir / "cycles.png").exists(),
        hyperparameters_table=markdown_table([{"setting": k, "value": v} for k, v in hyper.items()]),
        citation=settings["citation"],
        **_lineage_context(lineage),
    )


# model-index metric types the Hub knows, for vstar's metric names; other names are used as they are.
_METRIC_TYPES = {"spearman": "spearmanr", "relative_l2": "relative_l2", "score_mae": "mae", "difficulty_mae": "mae"}
_COUNTS = ("num_examples", "num_scored", "num_skipped", "skipped")


def heldout_metrics(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Every held-out metric of a cycle as model-index entries (accuracy first; counts left out)."""
    values = dict(entry.get("heldout") or {})
    values.setdefault("accuracy", entry.get("heldout_accuracy"))
    order = ["accuracy"] + sorted(k for k in values if k != "accuracy")
    return [
        {"type": _METRIC_TYPES.get(k, k), "value": values[k], "name": f"held-out {k.replace('_', ' ')}"}
        for k in order
        if values[k] is not None and k not in _COUNTS
    ]
