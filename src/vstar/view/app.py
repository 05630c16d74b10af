"""`vstar view`: a local Gradio app that shows a run's answers beside their clips.

```bash
pip install 'vstar[viewer]'
vstar view runs/demo                       # a run directory of `vstar cycle` / `vstar demo`
vstar view runs/demo/cycle-2/dataset       # one dataset (instruction, caption, QA or selection output)
vstar view my-org/shapes-star              # a pushed run: every cycle-<k> version, metrics from the model repo
vstar view my-org/shapes-star@cycle-2 --port 7861
```

Per cycle: the counts and the curve of held-out accuracy, its control and the yield. The answers table filters by
cycle, accepted/rejected, direct/rationalized, class and verdict reason (and, where a dataset has them, by question
type, format and teacher), and searches the question, answer and description; selecting a row plays its clip (the
`start`/`end` window) beside the question, the answer, the label, each verdict field with its reason and the model
that answered.
"""

# No `from __future__ import annotations`: Gradio reads the `gr.SelectData` annotation of the select handler.
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.errors import ConfigError
from vstar.view.data import FACET_COLUMNS, RowFilter, RunView, label_class, open_view

logger = logging.getLogger(__name__)

ALL = "all"
TABLE_COLUMNS = ["id", "cycle", "status", "kind", "class", "reason", "answer"]
# Shown before `answer` when the dataset has them: QA, caption and selection datasets' own columns.
EXTRA_COLUMNS = (*FACET_COLUMNS, "score")
FACET_LABELS = {"question_type": "question type", "format": "format", "teacher": "teacher"}
# Longest clip written for playback; a longer window is shown at a lower frame rate.
MAX_CLIP_FRAMES = 1800


@dataclass
class ViewConfig:
    """`vstar view TARGET`: browse a run or a dataset in the browser."""

    target: str = field(
        default="", metadata={"help": "Run directory, dataset directory, or ORG/NAME[@revision] on the Hub."}
    )
    model_repo: str | None = field(
        default=None,
        metadata={"help": "A pushed run's model repo, for its metrics (default: the model repo of the same name)."},
    )
    port: int | None = field(default=None, metadata={"help": "Port on the loopback (default: the first free one)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0 to serve a network)."})
    share: bool = field(default=False, metadata={"help": "Also open a public Gradio share link."})
    page_size: int = field(default=50, metadata={"help": "Rows per page of the answers table."})


def _choice(value: Any) -> Any:
    return None if value in (None, "", ALL) else value


def row_filter(
    cycle: Any,
    status: Any,
    kind: Any,
    klass: Any,
    reason: Any,
    text: Any,
    question_type: Any = None,
    format: Any = None,
    teacher: Any = None,
) -> RowFilter:
    """The filter the table's controls describe (`all` or empty: no constraint)."""
    cycle = _choice(cycle)
    return RowFilter(
        cycle=int(cycle) if cycle is not None else None,
        status=_choice(status),
        kind=_choice(kind),
        label_class=_choice(klass),
        reason=_choice(reason),
        text=(text or "").strip() or None,
        question_type=_choice(question_type),
        format=_choice(format),
        teacher=_choice(teacher),
    )


def facet_choices(view: RunView) -> dict[str, list[str]]:
    """The choices of each facet filter the view offers: its `FACET_COLUMNS` that some row fills, values read from
    its files."""
    choices = {}
    for column in view.facets():
        # A column no row fills filters nothing: QA rows built from LLaVA-Video's JSON name no teacher.
        values = view.facet_values(column)
        if values:
            choices[column] = [ALL, *values]
    return choices


def table_columns(view: RunView, facets: Iterable[str] = ()) -> list[str]:
    """The answers table's columns: `TABLE_COLUMNS`, with the offered `facets` and a selection's `score` before
    `answer`."""
    shown = set(facets) | ({"score"} & set(view.columns))
    return [*TABLE_COLUMNS[:-1], *(c for c in EXTRA_COLUMNS if c in shown), TABLE_COLUMNS[-1]]


def table_row(row: dict[str, Any], view: RunView | None = None, extra: tuple[str, ...] | list[str] = ()) -> list[Any]:
    """A row of the answers table: the `TABLE_COLUMNS` values, with the `extra` columns' values before `answer`."""
    verification = row.get("verification") or {}
    answer = row.get("answer") or row.get("description") or ""
    kind = "rationalized" if row.get("rationalized") else "direct" if "rationalized" in row else ""
    if view is not None and "_part" in row:
        klass = view.class_of(row)
    else:
        klass = label_class(row.get("label")) if row.get("label") is not None else ""
    return [
        row.get("id"),
        row.get("cycle"),
        row.get("_status"),
        kind,
        klass,
        verification.get("reason") or row.get("reason") or "",
        *("" if row.get(column) is None else row[column] for column in extra),
        answer if len(answer) <= 160 else answer[:157] + "...",
    ]


def verdict_rows(row: dict[str, Any]) -> list[list[Any]]:
    fields = (row.get("verification") or {}).get("fields") or []
    return [[f.get("name"), f.get("passed"), f.get("expected"), f.get("found"), f.get("reason"), f.get("detail")]
            for f in fields]  # fmt: skip


def detail_markdown(row: dict[str, Any]) -> str:
    """The selected row as text: question, answer, label, verdict and generator, plus any caption or QA fields."""
    verification = row.get("verification") or {}
    lines = [f"### {row.get('id')} (cycle {row.get('cycle')}, {row.get('_status')})"]
    if verification:
        outcome = "passed" if verification.get("passed") else "failed"
        lines.append(f"**Verdict:** {outcome}: `{verification.get('reason')}`")
    elif row.get("reason"):
        lines.append(f"**Reason:** `{row['reason']}`")
    for key, title in (("question", "Question"), ("answer", "Answer"), ("description", "Description")):
        if row.get(key):
            lines.append(f"**{title}:**\n\n{row[key]}")
    if row.get("label") is not None:
        lines.append(f"**Label:** `{row['label']}`")
    for key in ("question_type", "format", "teacher", "best_teacher", "score"):
        if row.get(key) is not None:
            lines.append(f"**{key}:** {row[key]}")
    if row.get("options"):
        lines.append("**Options:** " + " / ".join(map(str, row["options"])))
    for key, title in (("clip_descriptions", "Level 1 (windows)"), ("summaries", "Level 2 (summaries)")):
        for item in row.get(key) or []:
            lines.append(f"- {title} {item.get('start')}-{item.get('end')} s: {item.get('text')}")
    if row.get("scores"):
        lines.append("**Scores:** `" + json.dumps(row["scores"], default=str) + "`")
    if row.get("generator"):
        lines.append(f"**Generated by:** `{row['generator']}`")
    return "\n\n".join(lines)


def clip_file(row: dict[str, Any], cache_dir: Path) -> Path | None:
    """A file the browser can play for the row's clip: its `start`/`end` window re-encoded (H.264), or the video
    itself when the row has no window. `None` when the row has no readable video."""
    from vstar.video import VideoDecodeError, sample_frames, write_video

    video = row.get("video")
    if not video:
        return None
    start, end = row.get("start"), row.get("end")
    identity = json.dumps([video.get("path"), hashlib.sha256(video.get("bytes") or b"").hexdigest(), start, end])
    target = cache_dir / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.mp4"
    if target.exists():
        return target
    try:
        probe = sample_frames(video, num_frames=1, start=start, end=end)
        if probe.window_num_frames <= MAX_CLIP_FRAMES:
            clip = sample_frames(video, num_frames=probe.window_num_frames, start=start, end=end)
            fps = clip.fps
        else:
            fps = MAX_CLIP_FRAMES / probe.duration
            clip = sample_frames(video, fps=fps, start=start, end=end)
        write_video(target, clip.frames, fps=fps)
    except (VideoDecodeError, FileNotFoundError) as error:
        logger.warning("Cannot show the clip of %s: %s", row.get("id"), error)
        return None
    return target


def build_app(view: RunView, page_size: int = 50, cache_dir: str | Path | None = None):
    """The Gradio Blocks of the viewer for `view` (launch it with `.launch()`).

    Args:
        view: the rows and metrics to show (`vstar.view.data.open_view`).
        page_size: rows per page of the answers table.
        cache_dir: where playable clips are written (default: a temporary folder).
    """
    import gradio as gr
    import pandas as pd

    cache = Path(cache_dir or tempfile.mkdtemp(prefix="vstar-view-"))
    cache.mkdir(parents=True, exist_ok=True)
    columns = set(view.columns)
    cycles = [ALL, *map(str, view.cycles())]
    statuses = [ALL, *view.statuses()]
    classes = [ALL, *view.facet_values("label")] if "label" in columns else [ALL]
    reasons = [ALL, *view.facet_values("verification")] if columns & {"verification", "reason"} else [ALL]
    facets = facet_choices(view)
    headers = table_columns(view, facets)
    extra = headers[len(TABLE_COLUMNS) - 1 : -1]

    def refresh(cycle, status, kind, klass, reason, *rest):
        *facet_values, text, page = rest
        rows = row_filter(cycle, status, kind, klass, reason, text, **dict(zip(facets, facet_values)))
        total = view.count(rows)
        pages = max(1, -(-total // page_size))
        page = min(max(1, int(page or 1)), pages)
        found = view.page(rows, (page - 1) * page_size, page_size)
        table = pd.DataFrame([table_row(r, view, extra) for r in found], columns=headers)
        places = [(r["_part"], r["_row"]) for r in found]
        return table, places, f"{total} rows, page {page} of {pages}", page

    def show(places, event: gr.SelectData):
        index = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if not places or index is None or index >= len(places):
            return None, "", []
        row = view.row(*places[index])
        clip = clip_file(row, cache)
        return (str(clip) if clip else None), detail_markdown(row), verdict_rows(row)

    with gr.Blocks(title=f"vstar view: {view.title}") as app:
        gr.Markdown(f"## vstar view: `{view.title}`")
        with gr.Tab("Cycles"):
            gr.Dataframe(pd.DataFrame(view.cycle_table()), label="Per cycle", interactive=False, elem_id="cycles")
            curve = view.curve()
            if curve:
                gr.LinePlot(
                    pd.DataFrame(curve),
                    x="cycle",
                    y="value",
                    color="series",
                    title="Held-out accuracy, control and yield",
                    elem_id="curve",
                )
        with gr.Tab("Answers"):
            with gr.Row():
                cycle = gr.Dropdown(cycles, value=ALL, label="cycle", elem_id="filter-cycle")
                status = gr.Dropdown(statuses, value=ALL, label="status", elem_id="filter-status")
                kind = gr.Dropdown([ALL, "direct", "rationalized"], value=ALL, label="kind", elem_id="filter-kind")
                klass = gr.Dropdown(classes, value=ALL, label="class", elem_id="filter-class")
                reason = gr.Dropdown(reasons, value=ALL, label="verdict reason", elem_id="filter-reason")
            facet_controls = []
            if facets:
                with gr.Row():
                    for column, choices in facets.items():
                        facet_controls.append(
                            gr.Dropdown(choices, value=ALL, label=FACET_LABELS[column], elem_id=f"filter-{column}")
                        )
            with gr.Row():
                text = gr.Textbox(label="search question / answer", elem_id="filter-text")
                page = gr.Number(value=1, precision=0, minimum=1, label="page", elem_id="page")
            summary = gr.Markdown(elem_id="summary")
            table = gr.Dataframe(headers=headers, interactive=False, wrap=True, elem_id="answers")
            places = gr.State([])
            with gr.Row():
                video = gr.Video(label="clip", interactive=False, elem_id="clip", autoplay=False, height=360)
                with gr.Column():
                    detail = gr.Markdown(elem_id="detail")
                    verdict = gr.Dataframe(
                        headers=["field", "passed", "expected", "found", "reason", "detail"],
                        interactive=False,
                        wrap=True,
                        elem_id="verdict",
                    )
        controls = [cycle, status, kind, klass, reason, *facet_controls, text, page]
        outputs = [table, places, summary, page]
        for control in (cycle, status, kind, klass, reason, *facet_controls):
            control.change(lambda *values: refresh(*values[:-1], 1), controls, outputs)
        text.submit(lambda *values: refresh(*values[:-1], 1), controls, outputs)
        page.submit(refresh, controls, outputs)
        # Named so a client can ask for a page of rows by the controls' values (`gradio_client`, the tests).
        app.load(refresh, controls, outputs, api_name="rows")
        table.select(show, [places], [video, detail, verdict])
    app.vstar_cache_dir = cache
    return app


def main(argv: list[str] | None = None) -> None:
    from vstar.configs import parse_configs

    argv = list(argv or [])
    if argv and not argv[0].startswith("-"):
        argv = ["--target", argv[0], *argv[1:]]
    (config,) = parse_configs((ViewConfig,), argv)
    if not config.target:
        raise ConfigError("name what to show: vstar view RUN_DIR | DATASET_DIR | ORG/NAME[@revision]")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("vstar view needs Gradio: pip install 'vstar[viewer]'") from None
    view = open_view(config.target, model_repo=config.model_repo)
    app = build_app(view, page_size=config.page_size)
    logger.info("Showing %s: %d rows in %d files", view.title, view.count(), len(view.parts))
    app.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        allowed_paths=[str(app.vstar_cache_dir)],
    )
