"""The review UI in a real browser: Debian's Chromium driven by Playwright, the real Streamlit server, the real API.

A lead opens the queue, opens a ticket, edits a label, accepts, sees the new revision in the timeline and the
ticket gone from the queue. Screenshots go to test-artifacts/ (and to TRIAGE_UI_SCREENSHOTS_DIR when set, which
is how docs/screenshots/ is made).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.settings import REPO_ROOT
from tests.ui.conftest import LiveApi, free_port, stop, wait_http

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # what DNS rebinding leaves the browser with: a web page's own name that resolves to this machine
    "--host-resolver-rules=MAP evil.test 127.0.0.1",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
TIMEOUT_MS = 60_000


def ui_command(port: int) -> list[str]:
    """How `triage serve` (or anyone) starts the UI; the same flags as documented in the README."""
    return [
        sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]


@pytest.fixture(scope="module")
def ui_url(api: LiveApi, reports: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "streamlit.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(TRIAGE_API_URL=api.url, TRIAGE_API_KEY=api.key("lead", "lead-browser"), TRIAGE_UI_REPORTS_DIR=str(reports))
    with log.open("wb") as out:
        process = subprocess.Popen(ui_command(port), cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", process, log, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def page(ui_url: str) -> Iterator:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (Debian's package; Playwright's own download is not used)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1100})
        tab.set_default_timeout(TIMEOUT_MS)
        try:
            yield tab
        finally:
            browser.close()


def shot(tab, name: str, doc: str | None = None) -> Path:
    """Save a screenshot under test-artifacts/; with TRIAGE_UI_SCREENSHOTS_DIR set, the README's copy as `doc`.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path))
    extra = os.environ.get("TRIAGE_UI_SCREENSHOTS_DIR")
    if extra and doc:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / f"{doc}.png")
    return path


def settle(tab) -> None:
    """Wait until Streamlit has finished the script run (no 'Running...' status) and no exception is shown."""
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS)
    assert tab.locator("[data-testid='stException']").count() == 0, tab.locator("[data-testid='stException']").first.inner_text()


def choose(tab, label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `label` (keyboard: type, Enter)."""
    box = tab.locator("[data-testid='stSelectbox']").filter(has=tab.get_by_text(label, exact=True))
    box.locator("input").click()
    box.locator("input").fill(option)
    tab.get_by_role("option", name=option).first.click()


def test_every_page_renders_in_the_browser(page, ui_url: str, tmp_path: Path) -> None:
    """Runs first on a fresh Streamlit server: each page opened by its URL (a bookmark) renders by itself."""
    for path, heading, name in (
        ("/insights", "Insights", "insights"),
        ("/evals", "Evals", "evals"),
        ("/taxonomy", "Taxonomy", "taxonomy"),
    ):
        page.goto(ui_url + path)  # a deep link opens the page itself, not the queue
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        settle(page)
        if name == "evals":
            choose(page, "Compare with", "run-")  # the other run, whichever is newer
            page.get_by_text("B − A").first.wait_for()
            settle(page)
        page.wait_for_timeout(500)  # charts draw after the script run ends
        shot(page, f"0{5 + ['insights', 'evals', 'taxonomy'].index(name)}-{name}", name)

    page.goto(ui_url + "/batch")
    page.get_by_role("heading", name="Batch").wait_for()
    upload = tmp_path / "tickets.csv"
    upload.write_text(
        "id,subject,body,channel\nb-1,Charged twice,My card was charged twice,email\n"
        "b-2,VPN down,Nobody can reach the VPN,phone\nb-3,Parcel late,Tracking stuck for a week,chat\n"
    )
    page.locator("input[type='file']").set_input_files(str(upload))
    page.get_by_role("button", name=re.compile("^Classify")).click()
    page.get_by_role("button", name="Download CSV").wait_for()
    settle(page)
    shot(page, "08-batch", "batch")


def test_a_lead_edits_a_label_accepts_and_the_ticket_leaves_the_queue(page, ui_url: str, api: LiveApi) -> None:
    with api.http() as http:
        first = http.get("/v1/review-queue", params={"limit": 1}).json()["items"][0]
        names = {label["id"]: label["name"] for label in http.get("/v1/taxonomy").json()["axes"]["service"]["labels"]}
    page.goto(ui_url)
    page.get_by_role("heading", name="Review queue").wait_for()
    settle(page)
    link = page.locator(f"a[href*='id={first['id']}']").filter(visible=True)
    link.wait_for()
    shot(page, "01-queue", "queue")
    # the Decision control shows each option whole: in a narrower column "suggest" was cut off at the edge
    clipped = page.evaluate(
        """() => {
            const group = document.querySelector("[data-testid='stButtonGroup']");
            const column = group.closest("[data-testid='stColumn']").getBoundingClientRect();
            return [...group.querySelectorAll("button")]
                .filter(b => b.getBoundingClientRect().right > column.right + 0.5 || b.scrollWidth > b.clientWidth)
                .map(b => b.innerText);
        }"""
    )
    assert clipped == [], clipped

    link.click()
    page.get_by_role("heading", name="Revision timeline").wait_for()
    settle(page)
    assert page.get_by_role("heading", name=first["subject"]).is_visible()
    old = first["labels"]["service"]
    new = next(label for label in names if label != old)
    shot(page, "02-ticket", "ticket")

    choose(page, "Service", f"{names[new]} ({new})")
    page.get_by_text(f"Accept saves your edit: service: {old} → {new}").wait_for()
    page.get_by_role("button", name=re.compile("^Accept")).click()
    page.get_by_text("Labels saved").first.wait_for()
    settle(page)
    timeline = page.locator("[data-testid='stVerticalBlock']").filter(has_text="edited the labels").last  # the innermost: one revision
    timeline.wait_for()
    assert "user:lead-browser" in timeline.inner_text() and f"service: {old} → {new}" in timeline.inner_text()
    timeline.scroll_into_view_if_needed()
    shot(page, "03-ticket-accepted")

    page.get_by_role("link", name="Back to queue").click()
    page.get_by_role("heading", name="Review queue").wait_for()
    settle(page)
    assert page.locator(f"a[href*='id={first['id']}']").count() == 0
    with api.http() as http:
        assert first["id"] not in [t["id"] for t in http.get("/v1/review-queue", params={"limit": 200}).json()["items"]]
    shot(page, "04-queue-after-review")


def test_the_ui_under_a_rebound_name_shows_only_why_and_calls_no_api(page, ui_url: str, api: LiveApi) -> None:
    """A web page that re-points its own name (evil.test) at 127.0.0.1 loads the loopback-bound UI as its own
    origin and, through the UI's server-side key, could read every ticket. Under that name every page now shows only
    the refusal and where to open the UI, and the API hears nothing; under 127.0.0.1 the queue is as before."""
    port = ui_url.rsplit(":", 1)[1]
    api_log = api.data_dir.parent / f"api-{api.url.rsplit(':', 1)[1]}.log"  # uvicorn's access log (tests/ui/conftest.py)
    ticket = api.tickets[0]
    tab = page.context.browser.new_page(viewport={"width": 1400, "height": 1100})  # a session of its own
    tab.set_default_timeout(TIMEOUT_MS)
    try:
        heard = api_log.read_text(errors="replace").count('HTTP/1.1"')
        for path in ("/", f"/ticket?id={ticket['id']}", "/taxonomy"):
            tab.goto(f"http://evil.test:{port}{path}")
            tab.get_by_text("DNS rebinding").or_(tab.get_by_role("heading")).first.wait_for()  # the refusal, or a page
            settle(tab)
            body = tab.locator("body").inner_text()
            assert tab.get_by_role("heading").count() == 0, body  # no page drawn, not even its title
            assert "API:" not in body and ticket["subject"] not in body and tab.locator("a[href*='id=']").count() == 0, body
            assert "evil.test" in body and f"http://127.0.0.1:{port}" in body, body
        shot(tab, "09-rebound-name-refused")
        assert api_log.read_text(errors="replace").count('HTTP/1.1"') == heard, "the UI called the API under a rebound name"

        tab.goto(ui_url)
        tab.get_by_role("heading", name="Review queue").wait_for()
        settle(tab)
        tab.locator("a[href*='id=']").filter(visible=True).first.wait_for()
        assert "DNS rebinding" not in tab.locator("body").inner_text()
    finally:
        tab.close()


def test_a_stopped_batch_keeps_its_rows_sends_nothing_more_and_classifies_only_the_rest(page, ui_url: str, api: LiveApi, tmp_path: Path) -> None:
    """Stopping a batch (or any click during it) used to throw away every row already classified, while the
    abandoned run kept sending the rest of the file to the API in the background."""
    topics = ("My card was charged twice", "The VPN drops every hour", "My parcel is a week late", "I cannot log in")
    upload = tmp_path / "many.csv"
    upload.write_text("id,subject,body\n" + "".join(f"m-{i},Ticket {i},{topics[i % 4]} (case {i})\n" for i in range(150)))
    api_log = api.data_dir.parent / f"api-{api.url.rsplit(':', 1)[1]}.log"
    page.goto(ui_url + "/batch")
    page.get_by_role("heading", name="Batch").wait_for()
    page.locator("input[type='file']").set_input_files(str(upload))
    page.get_by_role("button", name=re.compile("^Classify")).click()
    page.wait_for_function(
        "() => { const p = document.querySelector(\"[data-testid='stProgress']\"); const m = p && p.innerText.match(/^(\\d+) \\//); return m && +m[1] >= 10 }"
    )
    page.locator("[data-testid='stMain']").get_by_role("button", name=re.compile("Stop")).click()
    rest = page.get_by_role("button", name=re.compile("^Classify the remaining"))
    rest.wait_for()
    settle(page)
    left = int(re.search(r"remaining (\d+)", rest.inner_text()).group(1))
    assert 0 < left <= 140, rest.inner_text()
    calls = api_log.read_text(errors="replace").count("POST /v1/classify")
    page.wait_for_timeout(4000)
    assert api_log.read_text(errors="replace").count("POST /v1/classify") == calls, "the stopped run kept classifying"
    page.get_by_text(f"{150 - left} of 150 tickets classified").wait_for()

    rest.click()
    page.get_by_text("Classified").first.wait_for()
    page.wait_for_function("() => ![...document.querySelectorAll('button')].some(b => b.innerText.startsWith('Classify'))", timeout=300_000)
    settle(page)
    # only the rest was sent: the requests in flight at the stop may still land in the session after the page
    # counted what is left (Streamlit starts the next run while the stopped one unwinds), so up to two fewer
    assert left - 2 <= api_log.read_text(errors="replace").count("POST /v1/classify") - calls <= left
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    with Path(download.value.path()).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"m-{i}" for i in range(150)]
    assert all(r["service"] and r["tier"] and r["decision"] and not r["error"] for r in rows), [r for r in rows if r["error"]][:3]


def test_a_batch_survives_a_page_reload_when_the_same_file_is_uploaded_again(page, ui_url: str, api: LiveApi, tmp_path: Path) -> None:
    """The results lived in the browser session only: a reload (or a closed tab) lost a finished or half-done
    batch without a word, and the file had to be classified again from the first row."""
    upload = tmp_path / "reload.csv"
    upload.write_text("id,subject,body\n" + "".join(f"r-{i},Reload {i},My invoice {i} shows the wrong amount\n" for i in range(8)))
    api_log = api.data_dir.parent / f"api-{api.url.rsplit(':', 1)[1]}.log"
    page.goto(ui_url + "/batch")
    page.get_by_role("heading", name="Batch").wait_for()
    page.locator("input[type='file']").set_input_files(str(upload))
    page.get_by_role("button", name=re.compile("^Classify")).click()
    page.get_by_role("button", name="Download CSV").wait_for()
    settle(page)
    calls = api_log.read_text(errors="replace").count("POST /v1/classify")

    page.reload()
    page.get_by_role("heading", name="Batch").wait_for()
    page.locator("input[type='file']").set_input_files(str(upload))
    page.get_by_role("button", name="Download CSV").wait_for()
    settle(page)
    assert page.get_by_role("button", name=re.compile("^Classify")).count() == 0
    assert api_log.read_text(errors="replace").count("POST /v1/classify") == calls  # nothing sent again
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    with Path(download.value.path()).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"r-{i}" for i in range(8)] and all(r["service"] and not r["error"] for r in rows)
