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


def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(lambda name: (resources.files("vstar.dataset_cards") / name).read_text("utf-8"))
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_card(template: str, metadata: dict[str, Any], **context: Any) -> str:
    """Render `dataset_cards/<template>` with `context`, behind the YAML `metadata` header."""
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    body = _environment().get_template(template).render(metadata=metadata, **context)
    return f"---\n{header}---\n\n{body.strip()}\n"


def write_card(path: str | Path, template: str, metadata: dict[str, Any], **context: Any) -> Path:
    path = Path(path)
    path.write_text(render_card(template, metadata, **context), encoding="utf-8")
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A Markdown table of dict rows (floats to 4 significant digits, `None` as an em dash)."""
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
) -> Path:
    """The README.md of a cycle's instruction dataset directory (configs `default` and `rejected`)."""
    from vstar.assemble import instruction_configs
    from vstar.io import dataset_info_yaml
    from vstar.schema import INSTRUCTION_FEATURES

    dataset_dir = Path(dataset_dir)
    counts = {"default": {"train": stats["accepted"]}, "rejected": {"train": stats["rejected"]}}
    metadata = {
        "pretty_name": f"Video-STaR cycle {stats['cycle']} instruction data",
        "license": "other",
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
) -> Path:
    """The README.md of a cycle's model directory, with held-out results in `model-index`."""
    model_dir = Path(model_dir)
    metadata: dict[str, Any] = {
        "base_model": train_config.model_name_or_path,
        "library_name": "peft" if train_config.finetuning == "lora" else "transformers",
        "license": "other",
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
        if cycle_config.source_revision:
            dataset_entry["revision"] = cycle_config.source_revision
        metadata["model-index"] = [
            {
                "name": repo_id or model_dir.name,
                "results": [
                    {
                        "task": {"type": "video-text-to-text", "name": cycle_config.task},
                        "dataset": dataset_entry,
                        "metrics": [
                            {"type": "accuracy", "value": entry["heldout_accuracy"], "name": "held-out accuracy"}
                        ],
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
    ]
    return write_card(
        model_dir / "README.md",
        "model.md.j2",
        metadata,
        title=f"Video-STaR cycle {entry['cycle']} ({cycle_config.task})",
        kind="A LoRA adapter" if train_config.finetuning == "lora" else "A finetuned model",
        entry=entry,
        base_model=train_config.model_name_or_path,
        dataset=dataset_repo or str(dataset_dir),
        dataset_revision=dataset_revision,
        repo_id=repo_id or str(model_dir),
        revision=revision,
        results_table=markdown_table(results),
        history_table=_history_table(history),
        plot=(model_dir / "cycles.png").exists(),
        hyperparameters_table=markdown_table([{"setting": k, "value": v} for k, v in hyper.items()]),
    )
