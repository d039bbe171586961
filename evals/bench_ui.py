"""How fast each page of the review UI renders with 10,000 tickets in the store (`python -m evals.bench_ui`).

What it builds: a private copy of a seeded store (Chroma + trained head), fresh records, the real API (uvicorn,
proposal mode) and the real Streamlit server. `--sample` seed tickets go through `POST /v1/tickets` (the real
classification, evidence and drafts), a share of them get real lead reviews (accept / edit / reject); then the
records are cloned to `--tickets` rows with new ids and creation times spread over 90 days (what a busy desk
accumulates), so every page reads from a 10,000-ticket database.

What it measures, per page, in Debian's Chromium driven by Playwright:
- `nav_s`: a lead clicks the page in the sidebar until the page's content is drawn and the script run is over
  (the time a lead waits when moving around the app) — the number the 2 s target is about;
- `load_s`: a full browser load of the page's URL (new session: the Streamlit bundle, the websocket, the run);
- `script_s`: the page's script alone (Streamlit AppTest, same API): Python + API time, no browser.
Median of `--repeat` tries each. Results: evals/reports/bench_ui.json and bench_ui.md.

    python -m evals.bench_ui                           # seeded store from data/ (make run / triage ingest)
    python -m evals.bench_ui --seeded /path/to/data    # another seeded data dir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent.machine import usable_cores
from agent.settings import REPO_ROOT, Settings

REPORTS = REPO_ROOT / "evals" / "reports"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TARGET_S = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(cmd: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{cmd[:4]} exited {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{health} did not come up: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def key(data_dir: Path, scope: str, name: str) -> str:
    env = {**os.environ, "TRIAGE_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "agent.cli", "keys", "create", "--scope", scope, "--name", name], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- the 10,000-ticket store


def post_sample(api: str, bot: str, lead: str, n: int, reviewed_share: float, rng: random.Random) -> None:
    """`n` seed tickets through the real API; a share of them reviewed by a lead (accept, edit, reject)."""
    rows = [json.loads(line) for line in (REPO_ROOT / "knowledge_base" / "seed" / "tickets.jsonl").read_text(encoding="utf-8").splitlines()]
    rng.shuffle(rows)
    services = sorted({r["labels"]["service"] for r in rows if r["labels"].get("service")})
    with httpx.Client(base_url=api, timeout=120) as http:
        for row in rows[:n]:
            body = {"subject": row.get("subject", ""), "body": row["body"][:4000], "channel": row.get("channel")}
            created = http.post("/v1/tickets", json=body, headers={"Authorization": f"Bearer {bot}"})
            created.raise_for_status()
            ticket = created.json()
            if rng.random() < reviewed_share:
                action = rng.choice(["accept", "accept", "edit", "reject"])
                review: dict[str, Any] = {"action": action, "comment": "bench review" if action != "accept" else None}
                if action == "edit":
                    review["labels"] = {"service": rng.choice([s for s in services if s != ticket["labels"]["service"]])}
                http.post(f"/v1/tickets/{ticket['id']}/reviews", json=review, headers={"Authorization": f"Bearer {lead}"}).raise_for_status()


def clone_to(settings: Settings, total: int, rng: random.Random) -> int:
    """Copy the stored tickets (with messages, revisions, reviews) under new ids until there are `total`."""
    from sqlalchemy import select

    from agent.records import MessageRow, Records, ReviewRow, RevisionRow, TicketRow, new_id

    records = Records.open(settings)
    now = datetime.now(UTC)
    try:
        with records.read() as session:
            tickets = list(session.scalars(select(TicketRow)))
            revisions, messages, reviews = {}, {}, {}
            for row in session.scalars(select(RevisionRow).order_by(RevisionRow.seq)):
                revisions.setdefault(row.ticket_id, []).append(row)
            for row in session.scalars(select(MessageRow)):
                messages.setdefault(row.ticket_id, []).append(row)
            for row in session.scalars(select(ReviewRow)):
                reviews.setdefault(row.ticket_id, []).append(row)
        made = 0
        while len(tickets) + made < total:
            batch, rows = [], []  # tickets first: the other rows point at them
            for source in tickets:
                if len(tickets) + made >= total:
                    break
                made += 1
                tid = new_id("tk")
                created = now - timedelta(days=rng.uniform(0, 90))
                review_delay = timedelta(hours=rng.uniform(0.2, 30))

                def shift(moment: datetime, human: bool, base: datetime = source.created_at, start: datetime = created, delay: timedelta = review_delay) -> datetime:
                    return start + (moment - base) + (delay if human else timedelta(0))

                fields = {c.key: getattr(source, c.key) for c in TicketRow.__table__.columns}
                fields.update(id=tid, idempotency_key=None, request_sha=None, created_at=created, updated_at=created, subject=f"{source.subject} #{made}".strip())
                rows.append(TicketRow(**fields))
                for r in revisions.get(source.id, []):
                    human = r.actor.startswith("user:")
                    cols = {c.key: getattr(r, c.key) for c in RevisionRow.__table__.columns if c.key != "id"}
                    classification = dict(r.classification) if r.classification else None
                    if classification:
                        classification["ticket_id"] = tid
                    cols.update(ticket_id=tid, classification=classification, started_at=shift(r.started_at, human), created_at=shift(r.created_at, human))
                    batch.append(RevisionRow(**cols))
                for m in messages.get(source.id, []):
                    batch.append(MessageRow(ticket_id=tid, seq=m.seq, author=m.author, text=m.text, created_at=shift(m.created_at, False)))
                for v in reviews.get(source.id, []):
                    cols = {c.key: getattr(v, c.key) for c in ReviewRow.__table__.columns if c.key != "id"}
                    cols.update(ticket_id=tid, created_at=shift(v.created_at, True))
                    batch.append(ReviewRow(**cols))
            with records.write() as session:
                session.add_all(rows)
                session.flush()
                session.add_all(batch)
        return len(tickets) + made
    finally:
        records.close()


# ---------------------------------------------------------------- measuring


def _waits() -> list[tuple[str, str, str, Callable[[Any], None]]]:
    def queue(page: Any) -> None:
        page.locator("a[href*='ticket?id=']").filter(visible=True).first.wait_for()

    def ticket(page: Any) -> None:
        page.get_by_role("heading", name="Revision timeline").wait_for()

    def heading(text: str, tables: int = 0, charts: int = 0) -> Callable[[Any], None]:
        """The heading, then at least `tables` drawn tables and `charts` drawn charts."""

        def wait(page: Any) -> None:
            page.get_by_role("heading", name=text, exact=True).first.wait_for()
            page.wait_for_function(
                f"() => document.querySelectorAll('[data-testid=stDataFrame] canvas').length >= {tables} "
                f"&& document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= {charts}"
            )

        return wait

    return [
        ("queue", "/", "Review queue", queue),
        ("ticket", "/ticket?id={ticket}", "Ticket", ticket),
        ("batch", "/batch", "Batch", lambda page: page.locator("[data-testid='stFileUploader']").wait_for()),
        ("insights", "/insights", "Insights", heading("KB gaps", tables=3)),
        ("evals", "/evals", "Evals", heading("Summary", tables=1, charts=1)),
        ("taxonomy", "/taxonomy", "Taxonomy", heading("Versions and their diff", tables=1)),
    ]


def settle(page: Any) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
    if page.locator("[data-testid='stException']").count():
        raise SystemExit("the page shows an exception: " + page.locator("[data-testid='stException']").first.inner_text())


def browser_times(ui: str, ticket_id: str, repeat: int, shots: Path | None) -> dict[str, dict[str, float]]:
    """Per page: full loads of its URL, then sidebar navigation in one open tab (the first visit of each page in
    that tab loads the page's components once: `first_s`; the later visits are `nav_s`)."""
    from playwright.sync_api import sync_playwright

    loads: dict[str, list[float]] = {}
    navs: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(ui)  # the bundle in the HTTP cache, like a lead's browser after the first visit
        settle(page)
        waits = _waits()
        for _ in range(repeat):
            for name, path, _link, wait in waits:
                started = time.perf_counter()
                page.goto(ui + path.format(ticket=ticket_id))
                wait(page)
                settle(page)
                loads.setdefault(name, []).append(time.perf_counter() - started)
        page.goto(ui + "/taxonomy")
        settle(page)
        for _ in range(repeat + 1):
            for name, _path, link, wait in waits:
                if name == "ticket":  # a ticket is opened from the queue; the previous page in the cycle is the queue
                    target = page.locator("a[href*='ticket?id=']").filter(visible=True).first
                else:
                    target = page.locator("[data-testid='stSidebarNav'] a").filter(has_text=link).first
                started = time.perf_counter()
                target.click()
                wait(page)
                settle(page)
                navs.setdefault(name, []).append(time.perf_counter() - started)
                if shots is not None:
                    page.screenshot(path=str(shots / f"bench-{name}.png"))
        browser.close()
    return {
        name: {
            "nav_s": round(statistics.median(navs[name][1:]), 3),
            "nav_max_s": round(max(navs[name][1:]), 3),
            "first_s": round(navs[name][0], 3),
            "load_s": round(statistics.median(loads[name]), 3),
        }
        for name in navs
    }


def script_times(api: str, lead: str, ticket_id: str, repeat: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ.update(TRIAGE_API_URL=api, TRIAGE_API_KEY=lead)
    result = {}
    for name, page, query in (
        ("queue", None, {}), ("ticket", "views/ticket.py", {"id": ticket_id}), ("batch", "views/batch.py", {}),
        ("insights", "views/insights.py", {}), ("evals", "views/evals.py", {}), ("taxonomy", "views/taxonomy.py", {}),
    ):
        times = []
        for _ in range(repeat):
            at = AppTest.from_file(str(REPO_ROOT / "ui" / "app.py"), default_timeout=120)
            at.run()
            if page:
                at.switch_page(page)
                for k, v in query.items():
                    at.query_params[k] = v
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
            if at.exception or at.error:
                raise SystemExit(f"{name}: {[e.value for e in at.exception] or [e.value for e in at.error]}")
        result[name] = round(statistics.median(times), 3)
    return result


def api_times(api: str, lead: str, ticket_id: str, repeat: int) -> dict[str, float]:
    calls = {
        "GET /v1/review-queue?limit=50": ("/v1/review-queue", {"limit": 50}),
        "GET /v1/stats/queue": ("/v1/stats/queue", {}),
        "GET /v1/stats?days=30": ("/v1/stats", {"days": 30}),
        "GET /v1/tickets/{id}": (f"/v1/tickets/{ticket_id}", {}),
        "GET /v1/tickets/{id}/revisions": (f"/v1/tickets/{ticket_id}/revisions", {}),
    }
    out = {}
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {lead}"}, timeout=120) as http:
        for name, (path, params) in calls.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                http.get(path, params=params).raise_for_status()
                times.append(time.perf_counter() - started)
            out[name] = round(statistics.median(times), 3)
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeded", type=Path, default=REPO_ROOT / "data", help="A seeded data dir (triage ingest); copied, never written.")
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300, help="Tickets classified through the API before cloning.")
    parser.add_argument("--reviewed", type=float, default=0.2, help="Share of the sample a lead reviews.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, default=None, help="Save one screenshot per page here.")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    if not any((args.seeded / "models").glob("proposal-*.pkl")):
        raise SystemExit(f"{args.seeded} is not a seeded data dir: run `triage ingest` (or `make run`) first, or pass --seeded")
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    try:
        data = work / "data"
        for part in ("chroma", "models"):
            shutil.copytree(args.seeded / part, data / part)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")} | {"TRIAGE_DATA_DIR": str(data), "TRIAGE_MODE": "proposal"}
        api_port, ui_port = free_port(), free_port()
        api = f"http://127.0.0.1:{api_port}"
        ui = f"http://127.0.0.1:{ui_port}"
        timings: dict[str, Any] = {}
        with serving([sys.executable, "-m", "uvicorn", "--factory", "agent.api:create_app", "--host", "127.0.0.1", "--port", str(api_port)], env, f"{api}/healthz", work / "api.log"):
            bot, lead = key(data, "bot", "bench-bot"), key(data, "lead", "bench-lead")
            started = time.perf_counter()
            post_sample(api, bot, lead, args.sample, args.reviewed, rng)
            timings["sample_s"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            total = clone_to(Settings(data_dir=data), args.tickets, rng)
            timings["clone_s"] = round(time.perf_counter() - started, 1)
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {lead}"}, timeout=120) as http:
                ticket_id = http.get("/v1/review-queue", params={"limit": 1}).json()["items"][0]["id"]
                counts = http.get("/v1/stats/queue").json()
                started = time.perf_counter()
                http.get("/v1/stats", params={"days": 30}).raise_for_status()  # the first read: every ticket's facts
                timings["stats_full_read_s"] = round(time.perf_counter() - started, 3)
                http.post("/v1/tickets", json={"subject": "Bench", "body": "One more ticket after the cache filled."}, headers={"Authorization": f"Bearer {bot}"}).raise_for_status()
                started = time.perf_counter()
                http.get("/v1/stats", params={"days": 30}).raise_for_status()  # after a write: only what changed is read
                timings["stats_after_write_s"] = round(time.perf_counter() - started, 3)
                total += 1
            ui_env = env | {"TRIAGE_API_URL": api, "TRIAGE_API_KEY": lead}
            ui_cmd = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py"), "--server.address", "127.0.0.1",
                      "--server.port", str(ui_port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
            with serving(ui_cmd, ui_env, f"{ui}/_stcore/health", work / "ui.log"):
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                pages = browser_times(ui, ticket_id, args.repeat, args.screenshots)
            scripts = script_times(api, lead, ticket_id, args.repeat)
            calls = api_times(api, lead, ticket_id, args.repeat)
        result = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": usable_cores(), "arch": platform.machine(), "python": platform.python_version(), "note": "shared with other work while measured"},
            "store": {"tickets": total, "queue_counts": counts, "sample_through_api": args.sample, "reviewed_share": args.reviewed},
            "target_s": TARGET_S,
            "pages": {
                name: pages[name] | {"script_s": scripts[name], "ok": max(pages[name]["nav_max_s"], pages[name]["first_s"], pages[name]["load_s"]) < TARGET_S}
                for name in pages
            },
            "api_s": calls,
            "setup": timings,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_ui.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (args.out / "bench_ui.md").write_text(render(result), encoding="utf-8")
        print(render(result))
        return 0 if all(p["ok"] for p in result["pages"].values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# UI render times",
        "",
        f"{result['store']['tickets']:,} tickets in the store (queue: {result['store']['queue_counts']}); "
        f"{m['cpus']}-core {m['arch']}, Python {m['python']} ({m['note']}); `python -m evals.bench_ui`, {result['generated_at']}.",
        "",
        "Seconds until the page's content is drawn and the script run is over; median of the tries. **nav**: a lead "
        "clicks the page in the sidebar (a ticket: its row in the queue) in an open tab; **first**: the first such "
        "visit in that tab (the page's components load once); **load**: a full browser load of the page's URL; "
        f"**script**: the page's Python run alone (AppTest) with its API calls. Target: under {result['target_s']:.0f} s.",
        "",
        "| page | nav | nav (worst) | first | load | script | all < 2 s |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for name, p in result["pages"].items():
        lines.append(
            f"| {name} | {p['nav_s']:.2f} | {p['nav_max_s']:.2f} | {p['first_s']:.2f} | {p['load_s']:.2f} | {p['script_s']:.2f} | {'yes' if p['ok'] else '**no**'} |"
        )
    lines += ["", "API calls behind the pages (median, seconds):", "", "| call | s |", "|---|---:|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in result["api_s"].items()]
    lines.append(f"| `GET /v1/stats?days=30`, first call after a write (the new rows read) | {result['setup']['stats_after_write_s']:.3f} |")
    lines.append(f"| `GET /v1/stats?days=30`, first call of the process (every ticket read) | {result['setup']['stats_full_read_s']:.3f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
