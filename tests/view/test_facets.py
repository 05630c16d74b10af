"""The viewer's question type, format and teacher filters, on a QA dataset and a caption dataset written by their
real writers (`vstar qa`'s `assemble_qa` + `write_qa_dataset`, `vstar caption`'s `write_captions`), a selection
dataset of `vstar select`'s columns, and an instruction dataset that has none of them; through the data layer and
through the app's own HTTP API.

Run: `python -m pytest tests/view/test_facets.py -q`
"""

from __future__ import annotations

from pathlib import Path

import pytest
from view_datasets import TEACHER_A, TEACHER_B

from vstar.io import load_split, split_file
from vstar.view.data import FACET_COLUMNS, RowFilter, open_view


def _truth(directory: Path) -> list[dict]:
    """Every row as `datasets` reads it back, in the viewer's order (default config, then rejected)."""
    rows = []
    for config, status in (("default", "accepted"), ("rejected", "rejected")):
        if (directory / split_file("train", config)).exists():
            rows += [{**r, "_status": status} for r in load_split(directory, "train", config).to_list()]
    return rows


def _ids(view, rows: RowFilter) -> list[str]:
    return [r["id"] for r in view.page(rows, 0, 10_000)]


def test_a_qa_dataset_filters_by_question_type_format_and_teacher(second_path):
    view = open_view(str(second_path["qa"]))
    truth = _truth(second_path["qa"])
    # What to offer is known from the schema, before any row is read.
    assert view.facets() == ["question_type", "format", "teacher"] and view.index_reads == 0
    assert view.facet_values("question_type") == [
        "binary", "causal", "count", "description-human", "description-scene", "spatial", "temporal"
    ]  # fmt: skip
    assert view.facet_values("format") == ["multiple_choice", "open"]
    assert view.facet_values("teacher") == [TEACHER_A, TEACHER_B]
    # Each small column was read once per file (default and rejected) and is kept for the filters.
    assert view.index_reads == 3 * 2

    count = RowFilter(question_type="count")
    expected = [r["id"] for r in truth if r["question_type"] == "count"]
    assert len(expected) == 5 and _ids(view, count) == expected and view.count(count) == 5
    choice_b = RowFilter(format="multiple_choice", teacher=TEACHER_B)
    expected = [r["id"] for r in truth if r["format"] == "multiple_choice" and r["teacher"] == TEACHER_B]
    assert expected == ["c3/multiple_choice/count", "c2#2/multiple_choice/rejected-0"]
    assert _ids(view, choice_b) == expected and view.count(choice_b) == 2
    # With the other filters: status, text, and a verdict reason.
    assert _ids(view, RowFilter(format="multiple_choice", teacher=TEACHER_B, status="rejected")) == [expected[1]]
    assert view.count(RowFilter(format="multiple_choice", teacher=TEACHER_B, reason="malformed")) == 1
    open_count_a = RowFilter(question_type="count", format="open", teacher=TEACHER_A)
    assert _ids(view, open_count_a) == ["c1/open/count", "c2#1/open/count"]
    reads = view.index_reads
    searched = RowFilter(question_type="count", format="open", text="GIRL")
    expected = [r["id"] for r in truth if r["question_type"] == "count" and r["format"] == "open"]
    assert all("girl" in r["question"] for r in truth if r["id"] in expected) and _ids(view, searched) == expected
    assert view.index_reads == reads + 2 * 2  # a search scans `question` and `answer` of both files, every time
    # Every combination counts exactly the rows it names, pages included.
    for question_type in (None, *view.facet_values("question_type")):
        for format in (None, "open", "multiple_choice"):
            for teacher in (None, TEACHER_A, TEACHER_B):
                rows = RowFilter(question_type=question_type, format=format, teacher=teacher)
                wanted = [
                    r["id"]
                    for r in truth
                    if question_type in (None, r["question_type"])
                    and format in (None, r["format"])
                    and teacher in (None, r["teacher"])
                ]
                assert view.count(rows) == len(wanted) and _ids(view, rows) == wanted
                assert [r["id"] for r in view.page(rows, 1, 2)] == wanted[1:3]
    assert view.count(RowFilter(question_type="speed")) == 0
    assert view.index_reads == reads + 2 * 2  # the kept facet columns were never read again


def test_a_caption_dataset_filters_by_teacher_only(second_path):
    view = open_view(str(second_path["captions"]))
    truth = _truth(second_path["captions"])
    assert view.facets() == ["teacher"] and view.facet_values("teacher") == [TEACHER_A, TEACHER_B]
    assert view.facet_values("question_type") == [] and view.facet_values("format") == []
    for teacher in (TEACHER_A, TEACHER_B):
        wanted = [(r["id"], r["_status"]) for r in truth if r["teacher"] == teacher]
        found = [(r["id"], r["_status"]) for r in view.page(RowFilter(teacher=teacher), 0, 100)]
        assert found == wanted and view.count(RowFilter(teacher=teacher)) == len(wanted)
    assert [r["id"] for r in view.page(RowFilter(teacher=TEACHER_B), 0, 100)] == ["c1", "c2"]
    assert _ids(view, RowFilter(teacher=TEACHER_B, status="rejected")) == ["c2"]
    assert view.count(RowFilter(teacher=TEACHER_B, text="slides")) == 1
    # A stage's reason counts where the verdict is empty (the teacher wrote nothing: no label check ran).
    assert truth[-1]["verification"] is None and truth[-1]["reason"] in view.facet_values("verification")
    assert view.count(RowFilter(teacher=TEACHER_B, reason=truth[-1]["reason"])) == 1
    # A column the dataset does not have names no row.
    assert view.count(RowFilter(question_type="count")) == 0 and view.count(RowFilter(format="open")) == 0


def test_a_selection_dataset_filters_by_the_selected_caption_teacher(second_path):
    view = open_view(str(second_path["selected"]))
    assert view.facets() == ["teacher"] and view.facet_values("teacher") == [TEACHER_A, TEACHER_B]
    assert _ids(view, RowFilter(teacher=TEACHER_B)) == ["c1"]
    assert [(r["id"], r["_status"], r["score"]) for r in view.page(RowFilter(teacher=TEACHER_A), 0, 10)] == [
        ("c2", "rejected", 0.05)
    ]


def test_an_instruction_dataset_offers_none_of_them(second_path):
    view = open_view(str(second_path["instructions"]))
    assert view.facets() == [] and all(view.facet_values(column) == [] for column in FACET_COLUMNS)
    assert view.count(RowFilter(teacher=TEACHER_A)) == 0 and view.count(RowFilter()) == 3
    assert view.count(RowFilter(kind="rationalized")) == 1


def test_imported_llava_qa_rows_have_formats_but_no_teachers(second_path):
    view = open_view(str(second_path["llava"]))
    # The columns are there (QA_FEATURES), but only `format` has values to choose from.
    assert view.facets() == ["question_type", "format", "teacher"]
    assert view.facet_values("format") == ["multiple_choice", "open"]
    assert view.facet_values("teacher") == [] and view.facet_values("question_type") == []
    assert _ids(view, RowFilter(format="open")) == ["l-open"] and _ids(view, RowFilter(format="multiple_choice")) == [
        "l-choice"
    ]


@pytest.fixture
def serve(tmp_path):
    """Launch the app of a dataset on the loopback; returns its client and the app."""
    pytest.importorskip("gradio", reason="vstar view needs the viewer extra")
    from gradio_client import Client

    from vstar.view.app import build_app

    apps = []

    def launch(directory: Path):
        app = build_app(open_view(str(directory)), page_size=3, cache_dir=tmp_path / "clips")
        _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
        apps.append(app)
        return Client(url, verbose=False), app

    yield launch
    for app in apps:
        app.close()


def _filter_ids(app) -> set[str]:
    return {block.elem_id for block in app.blocks.values() if (block.elem_id or "").startswith("filter-")}


BASE_FILTERS = {"filter-cycle", "filter-status", "filter-kind", "filter-class", "filter-reason", "filter-text"}


def test_the_app_offers_the_filters_a_dataset_has_and_shows_them_in_the_table(second_path, serve):
    from vstar.view.app import TABLE_COLUMNS

    client, app = serve(second_path["qa"])
    assert _filter_ids(app) == BASE_FILTERS | {"filter-question_type", "filter-format", "filter-teacher"}
    choices = {b.elem_id: [c[0] for c in b.choices] for b in app.blocks.values() if hasattr(b, "choices")}
    assert choices["filter-format"] == ["all", "multiple_choice", "open"]
    assert choices["filter-teacher"] == ["all", TEACHER_A, TEACHER_B]
    assert "count" in choices["filter-question_type"] and len(choices["filter-question_type"]) == 1 + 7
    truth = _truth(second_path["qa"])

    def rows(question_type="all", format="all", teacher="all", status="all", text="", page=1):
        # The controls in the app's order: cycle, status, kind, class, reason, the facets, search, page.
        return client.predict("all", status, "all", "all", "all", question_type, format, teacher, text, page,
                              api_name="/rows")  # fmt: skip

    table, summary, page = rows(question_type="count")
    expected = [r for r in truth if r["question_type"] == "count"]
    assert summary == "5 rows, page 1 of 2" and page == 1
    headers = table["headers"]
    assert headers == [*TABLE_COLUMNS[:-1], "question_type", "format", "teacher", TABLE_COLUMNS[-1]]
    shown = [dict(zip(headers, cells)) for cells in table["data"]]
    assert [(r["id"], r["question_type"], r["format"], r["teacher"]) for r in shown] == [
        (r["id"], r["question_type"], r["format"], r["teacher"]) for r in expected[:3]
    ]
    table, summary, _ = rows(question_type="count", page=2)
    assert [cells[0] for cells in table["data"]] == [r["id"] for r in expected[3:]] and summary.endswith("2 of 2")
    table, summary, _ = rows(format="multiple_choice", teacher=TEACHER_B, status="rejected")
    assert summary.startswith("1 rows") and table["data"][0][0] == "c2#2/multiple_choice/rejected-0"
    assert table["data"][0][headers.index("question_type")] == ""  # a malformed output has no type
    _, summary, _ = rows(question_type="count", format="open", teacher=TEACHER_A, text="girl")
    assert summary.startswith("2 rows")
    _, summary, _ = rows()
    assert summary.startswith(f"{len(truth)} rows")

    client, app = serve(second_path["captions"])
    assert _filter_ids(app) == BASE_FILTERS | {"filter-teacher"}
    table, summary, _ = client.predict("all", "all", "all", "all", "all", TEACHER_B, "", 1, api_name="/rows")
    assert summary.startswith("2 rows") and table["headers"] == [*TABLE_COLUMNS[:-1], "teacher", TABLE_COLUMNS[-1]]
    assert [(cells[0], cells[2], cells[-2]) for cells in table["data"]] == [
        ("c1", "accepted", TEACHER_B), ("c2", "rejected", TEACHER_B)
    ]  # fmt: skip

    client, app = serve(second_path["selected"])
    assert _filter_ids(app) == BASE_FILTERS | {"filter-teacher"}
    table, summary, _ = client.predict("all", "all", "all", "all", "all", TEACHER_A, "", 1, api_name="/rows")
    assert table["headers"] == [*TABLE_COLUMNS[:-1], "teacher", "score", TABLE_COLUMNS[-1]]
    assert [cells[-3:-1] for cells in table["data"]] == [[TEACHER_A, 0.05]]

    # QA rows imported from LLaVA-Video JSON have a format, but no teacher or question type to filter by.
    client, app = serve(second_path["llava"])
    assert _filter_ids(app) == BASE_FILTERS | {"filter-format"}
    table, summary, _ = client.predict("all", "all", "all", "all", "all", "multiple_choice", "", 1, api_name="/rows")
    assert table["headers"] == [*TABLE_COLUMNS[:-1], "format", TABLE_COLUMNS[-1]]
    assert summary.startswith("1 rows") and [cells[0] for cells in table["data"]] == ["l-choice"]

    client, app = serve(second_path["instructions"])
    assert _filter_ids(app) == BASE_FILTERS
    table, summary, _ = client.predict("all", "all", "rationalized", "all", "all", "", 1, api_name="/rows")
    assert table["headers"] == TABLE_COLUMNS and summary.startswith("1 rows") and table["data"][0][0] == "i1"
