"""The web page in real headless Chromium (Debian's `chromium`, driven by Playwright): submit a
heatmap from the form, watch the event stream carry progress to 100 %, see plot and table.

Also screenshots the finished job's page; with BOLAB_UPDATE_SCREENSHOT=1 it becomes
`docs/ui.png`, the README's screenshot (otherwise a temporary file, so a test run leaves the
checkout as it found it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bolab.client import LabClient, LabError
from tests.helpers import TINY

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
README_SCREENSHOT = Path(__file__).parents[1] / "docs" / "ui.png"

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

if not Path(CHROMIUM).exists():  # .ci/run installs it; a bare laptop may not have it
    pytest.skip("no chromium binary (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, lab: LabClient) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
    # Anything the page's Content-Security-Policy refused (Chromium reports it on the console).
    tab.on("console", lambda m: problems.append(m.text) if "Security Policy" in m.text else None)
    yield tab
    context.close()
    # The page loads only from the API (no CDN); aborted streams on navigation are fine.
    assert not [p for p in problems if "/events" not in p], problems


def test_submit_watch_and_screenshot(page: Page, lab: LabClient, tmp_path: Path) -> None:
    base = str(lab.http.base_url).rstrip("/")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{base}/ui/#/submit")
    editor = page.locator("#spec-editor")
    expect(editor).to_have_value(re.compile('"d_over_n"'))  # the quick heatmap, preloaded
    assert page.locator("#example option").count() >= 3
    assert "paper_heatmap" in page.locator("#example").inner_text()

    # Bad JSON is caught in the page; a bad spec is answered by the service, naming the field.
    editor.fill('{"n": 20, "d": 40, "width": 15}')
    page.click("#submit")
    expect(page.locator("#submit-errors")).to_contain_text("width")
    page.select_option("#example", "quick_heatmap")
    page.click("#submit")
    # The estimate first (a dry run): nothing is submitted until the confirm.
    estimate = page.locator("#estimate")
    expect(estimate).to_be_visible()
    expect(estimate.locator("tr[data-what='cells'] td")).to_have_text("16")
    expect(estimate.locator("tr[data-what='wall time, CPU worker'] td")).to_contain_text(" s")
    assert not any("dry_run" not in url and url.endswith("/v1/jobs") for url in requested)
    page.click("#confirm")

    page.wait_for_url("**/ui/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    text = page.locator("#progress-text")
    expect(text).to_contain_text("(100 %)", timeout=90_000)
    expect(page.locator("#job-status .status")).to_have_text("succeeded")
    expect(page.locator("#summary tbody tr")).to_have_count(16)
    expect(page.locator("#cancel")).to_be_hidden()
    # The final plot: drawn from all 16 cells, a real PNG the browser decoded.
    plot = page.locator("#plot[data-cells='16']")
    expect(plot).to_be_visible(timeout=30_000)
    page.wait_for_function("document.getElementById('plot').naturalWidth > 100")

    # The progress came from the event stream, and the table matches the service's numbers.
    assert any(url.endswith(f"/v1/jobs/{job_id}/events") for url in requested)
    job = lab.status(job_id)
    first = page.locator("#summary tbody tr").first.locator("td")
    assert first.nth(0).inner_text() == str(job["summary"][0]["n"])
    # The test error's 95 % interval, as the service summarises it.
    headers = page.locator("#summary thead th").all_inner_texts()
    interval = first.nth(headers.index("95 % interval")).inner_text()
    lo, hi = (float(v) for v in interval.strip("[]").split(", "))
    row = job["summary"][0]
    assert lo == pytest.approx(row["test_error_ci95_lo"], rel=1e-2, abs=1e-3)
    assert hi == pytest.approx(row["test_error_ci95_hi"], rel=1e-2, abs=1e-3)
    # Everything from the API (blob: URLs are the plot images the page fetched with its key).
    assert all(url.startswith((base, "blob:")) for url in requested), requested

    update = os.environ.get("BOLAB_UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "ui.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    # The job list shows it: status, owner, a full progress bar and its age.
    page.goto(f"{base}/ui/#/")
    row = page.locator(f"#jobs tr[data-job='{job_id}']")
    expect(row.locator(".status")).to_have_text("succeeded")
    expect(row.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    assert row.locator("td").nth(2).inner_text() == job["owner"]


def test_cancel_from_the_job_page(page: Page, lab: LabClient) -> None:
    from tests.test_service_jobs import SLOW_GRID

    job_id = lab.submit(SLOW_GRID)["id"]
    base = str(lab.http.base_url).rstrip("/")
    page.goto(f"{base}/ui/#/jobs/{job_id}")
    # The short cell finishes and shows up live (row and partial plot) while the long one runs.
    expect(page.locator("#summary tbody tr")).to_have_count(1, timeout=60_000)
    expect(page.locator("#plot[data-cells='1']")).to_be_visible(timeout=30_000)
    expect(page.locator("#delete")).to_be_hidden()  # an active job is cancelled first
    page.click("#cancel")
    expect(page.locator("#job-status .status")).to_have_text("cancelled")
    assert lab.status(job_id)["status"] == "cancelled"
    expect(page.locator("#delete")).to_be_visible()


def test_delete_from_the_job_page(page: Page, lab: LabClient) -> None:
    job_id = lab.submit(TINY)["id"]
    assert lab.wait(job_id, timeout=60)["status"] == "succeeded"
    base = str(lab.http.base_url).rstrip("/")
    page.goto(f"{base}/ui/#/jobs/{job_id}")
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete job ... for good?"
    page.click("#delete")
    page.wait_for_url("**/ui/#/")  # back to the list, which no longer has it
    expect(page.locator("#jobs")).to_be_visible()
    expect(page.locator(f"#jobs tr[data-job='{job_id}']")).to_have_count(0)
    with pytest.raises(LabError) as gone:
        lab.status(job_id)
    assert gone.value.status_code == 404


def test_docs_render_from_the_api_alone(page: Page, lab: LabClient) -> None:
    """Swagger UI, served by the API under its CSP, draws every operation of the document."""
    base = str(lab.http.base_url).rstrip("/")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{base}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("bolab lab service")
    operations = sum(len(ops) for ops in lab.http.get("/openapi.json").json()["paths"].values())
    expect(page.locator(".opblock")).to_have_count(operations, timeout=30_000)
    assert all(url.startswith((base, "data:")) for url in requested), requested


def test_estimate_over_a_bound_cannot_be_confirmed(page: Page, lab: LabClient) -> None:
    """The form's estimate lists each bound the spec breaks and offers no confirm; editing the
    spec goes back to the form. Nothing is submitted meanwhile."""
    before = len(lab.list(limit=200)["items"])
    page.goto(f"{str(lab.http.base_url).rstrip('/')}/ui/#/submit")
    editor = page.locator("#spec-editor")
    editor.fill('{"n": 5000, "d": 100000, "width": 4096}')
    page.click("#submit")
    violations = page.locator("#estimate-violations li")
    expect(violations.first).to_be_visible()
    assert any("max_cost" in text for text in violations.all_inner_texts())
    expect(page.locator("#confirm")).to_be_disabled()
    editor.fill(json.dumps(TINY))
    expect(page.locator("#estimate")).to_be_hidden()
    expect(page.locator("#submit")).to_be_visible()
    assert len(lab.list(limit=200)["items"]) == before


def test_a_refine_job_page_shows_its_round_and_boundary_plot(page: Page, lab: LabClient) -> None:
    from tests.test_adaptive_service import REFINE_JOB

    job_id = lab.submit(REFINE_JOB)["id"]
    base = str(lab.http.base_url).rstrip("/")
    page.goto(f"{base}/ui/#/jobs/{job_id}")
    expect(page.locator("#job-round")).to_contain_text(re.compile(r"round \d+"), timeout=60_000)
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=120_000)
    expect(page.locator("#boundary-plot")).to_be_visible(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#boundary-plot').naturalWidth > 0")
    headers = page.locator("#summary th").all_inner_texts()
    assert headers[:3] == ["n", "d_over_n", "gamma"]  # the grid axes, then the refine axis
