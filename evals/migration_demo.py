"""A taxonomy migration on a real deployment, end to end: `python -m evals.migration_demo` (README figures).

It seeds a store under evals/runs/migration_demo/ (the shipped seed less the tickets it files, so the agent has not
seen them), files every second one of the project's hand-written tickets (knowledge_base/seed/handwritten.jsonl;
the others stay in the seed, as they teach the IT services; or all of --written FILE)
through the lifecycle in proposal mode, lets a "lead" review every second one with the labels it was written with, writes the next version of the default taxonomy (one step of each kind:
`write_v2`, also used by the tests; the split with a keyword rule) and runs the real `triage taxonomy migrate`, dry run then --commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from agent.settings import REPO_ROOT

DEFAULT = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"
STEPS = [
    {"op": "rename", "axis": "service", "from": "it_help_desk", "to": "service_desk"},
    {"op": "merge", "axis": "service", "from": ["network", "cloud"], "to": "infrastructure"},
    {"op": "split", "axis": "service", "from": "technical_support", "to": ["software_application", "hardware"]},
    {"op": "retire", "axis": "service", "from": "feedback_complaints", "to": "general_information"},
]

# the demo's split lets keywords settle what they can (software words first: "the app on our tablets" is the app)
# and re-asks the agent for the rest
SPLIT_RULES = [
    {"to": "software_application",
     "keywords": ["app", "api", "webhook", "integration", "export", "update", "software", "Schnittstelle", "Anwendung", "integración"]},
    {"to": "hardware", "keywords": ["laptop", "printer", "monitor", "keyboard", "tablet", "docking station", "headset"]},
]
DEMO_STEPS = [{**step, "rules": SPLIT_RULES} if step["op"] == "split" else step for step in STEPS]


def write_v2(dest: Path, steps: list[dict] | None = None) -> Path:
    """default.yaml as version `<v>.2`: it_help_desk renamed, network + cloud merged, technical_support split,
    feedback_complaints retired into general_information."""
    raw = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    previous = raw["version"]
    service = raw["axes"]["service"]
    by_id = {label["id"]: label for label in service["labels"]}
    gone = {"network", "cloud", "technical_support", "feedback_complaints"}
    labels = []
    for label in service["labels"]:
        if label["id"] == "it_help_desk":
            label = {**label, "id": "service_desk", "name": "Service desk"}
        if label["id"] == "network":
            merged = f"{by_id['network']['description']} {by_id['cloud']['description']}"
            label = {**label, "id": "infrastructure", "name": "Infrastructure", "description": merged,
                     "examples": by_id["network"].get("examples", []) + by_id["cloud"].get("examples", [])}
        elif label["id"] in gone:
            continue
        labels.append(label)
    service["labels"] = labels
    if service["fallback"] in gone:
        service["fallback"] = "general_information"
    raw["version"] = f"{previous}.2"
    raw["migration"] = {"from_version": previous, "steps": STEPS if steps is None else steps}
    dest.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return dest


WRITTEN = REPO_ROOT / "knowledge_base" / "seed" / "handwritten.jsonl"
SEED = REPO_ROOT / "knowledge_base" / "seed" / "tickets.jsonl"


def shown(path: Path) -> Path:
    """A path as the printed command gives it: from the repository root where it lies inside, else absolute (an --out
    outside the repository, or a relative one, used to end the demo in a ValueError after the tickets were filed)."""
    path = path.resolve()
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=200, help="tickets filed before the migration")
    parser.add_argument("--written", type=Path, default=WRITTEN,
                        help="JSONL of labelled tickets to file (id, subject, body, labels {service, tier}); default: "
                        "knowledge_base/seed/handwritten.jsonl (left out of the demo's seed)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evals" / "runs" / "migration_demo")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="Before the CLI runs, serve the API and the review UI on the new version, press the Taxonomy "
                        "page's dry run in Debian's Chromium and save the page here (how docs/screenshots/taxonomy.png is made)")
    args = parser.parse_args(argv)
    if not args.written.is_file():  # checked before --out is cleared
        parser.error(f"--written {args.written} does not exist; pass a JSONL of labelled tickets with subject, body and "
                     "labels (the default is knowledge_base/seed/handwritten.jsonl)")
    from agent.contracts import ReviewIn, TicketIn
    from agent.lifecycle import Lifecycle
    from agent.records import Records
    from agent.service import running_service
    from agent.settings import Settings

    shutil.rmtree(args.out, ignore_errors=True)
    data_dir = args.out / "data"
    url = f"sqlite:///{data_dir / 'triage.db'}"
    settings = Settings(data_dir=data_dir, taxonomy_path=DEFAULT, mode="proposal", database_url=url)
    written = [json.loads(line) for line in args.written.read_text(encoding="utf-8").splitlines() if line.strip()]
    # every second one is filed, the others stay in the seed: the IT services are taught by these tickets alone
    rows = (written[1::2] if args.written.resolve() == WRITTEN else written)[: args.tickets]
    filed = {row.get("id") for row in rows}
    seed = args.out / "seed.jsonl"  # the shipped seed without the tickets filed here: agreement on unseen tickets
    seed.parent.mkdir(parents=True, exist_ok=True)
    seed.write_text("".join(line + "\n" for line in SEED.read_text(encoding="utf-8").splitlines()
                            if line.strip() and json.loads(line).get("id") not in filed), encoding="utf-8")
    with running_service(settings, seed=False, progress=True) as service:
        service.ingest(seed_path=seed, progress=True)
        records = Records(url)
        records.upgrade()
        lifecycle = Lifecycle(service, records)
        lifecycle.register_taxonomy()
        for i, row in enumerate(tqdm(rows, desc="filing tickets", unit="ticket")):
            view, _ = lifecycle.create_ticket(TicketIn(subject=row["subject"], body=row["body"], channel="email"), created_by="demo")
            if i % 2 == 0:
                lifecycle.review(view.id, ReviewIn(action="edit", labels=row["labels"]), reviewer="demo-lead")
        records.close()
    v2 = write_v2(args.out / "default-v2.yaml", steps=DEMO_STEPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(TRIAGE_DATA_DIR=str(data_dir), TRIAGE_DATABASE_URL=url, TRIAGE_TAXONOMY_PATH=str(v2))
    triage = str(Path(sys.executable).parent / "triage")
    if args.screenshot is not None:
        screenshot_dry_run(env, url, args.screenshot)
    for extra in ([], ["--commit"]):
        command = [triage, "taxonomy", "migrate", "--mode", "proposal", *extra]
        print(f"\n$ TRIAGE_TAXONOMY_PATH={shown(v2)} triage taxonomy migrate --mode proposal {' '.join(extra)}".rstrip(), flush=True)
        subprocess.run(command, env=env, check=True)


def screenshot_dry_run(env: dict[str, str], url: str, dest: Path) -> None:
    """The real API and UI on the new version (an admin key), the Taxonomy page's dry run pressed in a browser."""
    from playwright.sync_api import sync_playwright

    from agent.auth import create_key
    from agent.local_llm import free_port, wait_until_ok
    from agent.records import Records

    records = Records(url)
    key = create_key(records, scope="admin", name="demo-admin")[0]
    records.close()

    def wait(address: str, timeout: float = 300.0) -> None:
        if not wait_until_ok(address, timeout, interval_s=0.5):
            raise SystemExit(f"{address} did not come up in {timeout:.0f} s")

    api_port, ui_port = free_port(), free_port()
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "agent.api:create_app", "--port", str(api_port)],
                           env={**env, "TRIAGE_MODE": "proposal"}, cwd=REPO_ROOT)
    ui = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py"), "--server.port", str(ui_port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--client.toolbarMode", "viewer"],
        env={**env, "TRIAGE_API_URL": f"http://127.0.0.1:{api_port}", "TRIAGE_API_KEY": key}, cwd=REPO_ROOT,
    )
    try:
        wait(f"http://127.0.0.1:{api_port}/healthz")
        wait(f"http://127.0.0.1:{ui_port}/_stcore/health")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1400})
            tab.set_default_timeout(600_000)
            tab.goto(f"http://127.0.0.1:{ui_port}/taxonomy")
            tab.get_by_role("button", name="Dry run (writes nothing)").click()
            tab.get_by_text("Dry run: ").wait_for()
            tab.get_by_text("Moving the history to this version").evaluate("e => e.scrollIntoView({block: 'start'})")
            tab.wait_for_timeout(500)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(dest))
            browser.close()
        print(f"screenshot: {dest}", flush=True)
    finally:
        for process in (ui, api):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
