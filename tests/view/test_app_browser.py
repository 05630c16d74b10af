"""`vstar view` in a real browser: the app on the loopback against a real run, and against QA and caption datasets
written by their writers (their question type, format and teacher filters), driven in headless Chromium."""

from pathlib import Path

import pytest

from vstar.view.data import RowFilter, open_view

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.fixture
def browser_page():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the viewer's browser test needs playwright")
    if CHROMIUM is None:
        pytest.skip("no Chromium here: install Debian's `chromium` package (.ci/run does) to run the browser test")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


@pytest.fixture
def served(view_run, tmp_path):
    pytest.importorskip("gradio", reason="vstar view needs the viewer extra")
    from vstar.view.app import build_app

    app = build_app(open_view(str(view_run)), page_size=50, cache_dir=tmp_path / "clips")
    _, url, _ = app.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, allowed_paths=[str(tmp_path / "clips")]
    )
    try:
        yield url
    finally:
        app.close()


def _choose(page, element_id: str, option: str) -> None:
    page.locator(f"#{element_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _summary_is(page, text: str) -> None:
    page.wait_for_function(
        "text => (document.querySelector('#summary')?.innerText || '').startsWith(text)", arg=text, timeout=30_000
    )


@pytest.mark.slow
def test_rejected_answers_of_cycle_1_with_their_verdict_and_clip(view_run, served, browser_page, tmp_path):
    page = browser_page
    view = open_view(str(view_run))
    wanted = view.page(RowFilter(cycle=1, status="rejected"), 0, 1000)
    assert wanted, "the run has rejected answers in cycle 1"

    page.goto(served)
    page.get_by_role("tab", name="Answers").click()
    _summary_is(page, f"{view.count()} rows")
    assert all(page.locator(f"#filter-{c}").count() == 0 for c in ("question_type", "format", "teacher"))
    _choose(page, "filter-cycle", "1")
    _choose(page, "filter-status", "rejected")
    _summary_is(page, f"{len(wanted)} rows")

    rows = page.locator("#answers [role=row].virtual-row")
    rows.first.wait_for()
    shown = [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(rows.count())]
    assert shown and all(cells[1] == "1" and cells[2] == "rejected" for cells in shown)
    assert [cells[0] for cells in shown] == [r["id"] for r in wanted[: len(shown)]]

    page.locator("#answers [data-testid=cell-0-0]").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#clip video'); return v && v.readyState >= 1; }", timeout=30_000
    )
    first = wanted[0]
    detail = page.locator("#detail").inner_text()
    assert first["id"] in detail and first["verification"]["reason"] in detail and first["question"] in detail
    verdict = page.locator("#verdict").inner_text()
    for item in first["verification"]["fields"]:
        assert item["reason"] in verdict and item["name"] in verdict
    video = page.evaluate(
        "() => { const v = document.querySelector('#clip video');"
        " return {src: v.currentSrc, error: v.error && v.error.code, duration: v.duration}; }"
    )
    assert video["src"].endswith(".mp4") and video["error"] is None and video["duration"] > 0
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.fixture
def launch(tmp_path):
    """Serve the app of a dataset directory on the loopback; returns its URL."""
    pytest.importorskip("gradio", reason="vstar view needs the viewer extra")
    from vstar.view.app import build_app

    apps = []

    def serve(directory) -> str:
        app = build_app(open_view(str(directory)), page_size=50, cache_dir=tmp_path / "clips")
        _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                               allowed_paths=[str(tmp_path / "clips")])  # fmt: skip
        apps.append(app)
        return url

    yield serve
    for app in apps:
        app.close()


def _shown_rows(page) -> list[dict[str, str]]:
    headers = page.locator("#answers [role=columnheader]").all_inner_texts()
    rows = page.locator("#answers [role=row].virtual-row")
    rows.first.wait_for()
    cells = [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(rows.count())]
    return [dict(zip([h.strip() for h in headers], [c.strip() for c in row])) for row in cells]


@pytest.mark.slow
def test_qa_rows_by_question_type_format_and_teacher(second_path, launch, browser_page):
    from view_datasets import TEACHER_A

    page = browser_page
    view = open_view(str(second_path["qa"]))
    page.goto(launch(second_path["qa"]))
    page.get_by_role("tab", name="Answers").click()
    _summary_is(page, f"{view.count()} rows")
    _choose(page, "filter-question_type", "count")
    _summary_is(page, f"{view.count(RowFilter(question_type='count'))} rows")
    _choose(page, "filter-format", "open")
    _summary_is(page, f"{view.count(RowFilter(question_type='count', format='open'))} rows")
    _choose(page, "filter-teacher", TEACHER_A)
    wanted = view.page(RowFilter(question_type="count", format="open", teacher=TEACHER_A), 0, 100)
    assert len(wanted) == 2
    _summary_is(page, "2 rows")
    shown = _shown_rows(page)
    assert [r["id"] for r in shown] == [r["id"] for r in wanted]
    assert all((r["question_type"], r["format"], r["teacher"]) == ("count", "open", TEACHER_A) for r in shown)

    # A caption dataset offers its teachers, and no question type or format.
    page.goto(launch(second_path["captions"]))
    page.get_by_role("tab", name="Answers").click()
    _summary_is(page, f"{open_view(str(second_path['captions'])).count()} rows")
    assert page.locator("#filter-teacher").count() == 1
    assert page.locator("#filter-question_type").count() == 0 and page.locator("#filter-format").count() == 0
