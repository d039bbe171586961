"""Measure the normalize node's language detector (`agent.nodes.normalize.detect_language`) on labelled text.

The detected language decides whether a draft is withheld (agent/nodes/draft.py `language_mismatch`) and which
packaged embedder `auto` picks (agent/embeddings.py), so a wrong or missing language has a cost: an English ticket
read as Portuguese gets no draft. This reports, per set, accuracy, the unknown rate and the confusion:

- Tobi-Bueck dev tickets (`support_tickets_multilang/tickets_dev.csv`, its `language` column) on subject + body,
  on the body alone and on the first 60 characters of subject + body (cut
  at a space, like a short ticket), each through the graph's own text path
  (`ticket_text`: HTML and quotes dropped, cleaned, redacted);
- the hand-written seed tickets (knowledge_base/seed/handwritten.jsonl: en, de, es, fr, pt);
- the Banking77 texts (English, one short query each);
- a few log-like English tickets (stack traces, config dumps, shell output) written here.

    python -m evals.language_check
    python -m evals.language_check --datasets ../shared/datasets --json language.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.contracts import TicketIn
from agent.nodes.normalize import detect_language, ticket_text

ROOT = Path(__file__).resolve().parent.parent
HEAD_CHARS = 60
# English tickets that are mostly machine output: what a stop-word vote misreads
LOG_TICKETS = (
    "Build fails\n\nTraceback (most recent call last):\n  File \"/opt/app/main.py\", line 12, in <module>\n"
    "    import numpy as np\nModuleNotFoundError: No module named 'numpy'",
    "Error on deploy\n\n2024-05-01 12:00:03 ERROR o.a.c.c.C.[.[.[/].[dispatcherServlet] Servlet.service() for servlet "
    "threw exception java.lang.NullPointerException: null at com.acme.api.OrderController.create(OrderController.java:88)",
    "Config\n\nserver:\n  port: 8080\n  host: 0.0.0.0\ndatabase:\n  url: postgres://db:5432/app\n  pool: 10\n"
    "logging:\n  level: debug",
    "sync broken\n\n$ rsync -avz /data/ backup@nas:/volume1/data/\nrsync: connection unexpectedly closed "
    "(0 bytes received so far) [sender]\nrsync error: unexplained error (code 255) at io.c(228) [sender=3.2.7]",
    "VPN drops\n\nat com.cisco.anyconnect.vpn.Tunnel.open(Tunnel.java:77)\nat com.cisco.anyconnect.vpn.Agent.run(Agent.java:12)"
    "\nat com.cisco.anyconnect.ui.Main.main(Main.java:5)\nCaused by: com.cisco.net.TimeoutException",
    "Login page broken\n\nUncaught TypeError: Cannot read properties of undefined (reading 'map')\n"
    "    at LoginForm (LoginForm.jsx:41:23)\n    at renderWithHooks (react-dom.development.js:14985:18)",
    "Printer\n\nlpstat -p\nprinter HP_LaserJet is idle. enabled since Mon 01 Jan 2024\ncups-browsed: No "
    "destination host name supplied by cups, cannot create printer queue",
    "DNS\n\nnslookup portal.example.com\nServer: 10.1.1.1\nAddress: 10.1.1.1#53\n** server can't find "
    "portal.example.com: NXDOMAIN",
    "Cannot open the app, it crashes at start: Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
    "disk full\n\nFilesystem Size Used Avail Use% Mounted on\n/dev/sda1 50G 50G 0 100% /\ntmpfs 3.9G 0 3.9G 0% /dev/shm",
)


def head(text: str, limit: int = HEAD_CHARS) -> str:
    """The first `limit` characters cut at the last space before them, as a short ticket (no half words)."""
    return text if len(text) <= limit else text[:limit].rsplit(None, 1)[0]


def graph_text(subject: str, body: str) -> str:
    """The text the normalize node detects on: subject and body through `ticket_text` (no length cap here)."""
    return ticket_text(TicketIn(subject=subject, body=body or subject or "-"), 1_000_000)[0]


def score(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Accuracy, unknown rate and confusion (gold -> detected -> count) of (gold, detected) pairs."""
    confusion: dict[str, Counter[str]] = {}
    for gold, found in pairs:
        confusion.setdefault(gold, Counter())[found] += 1
    total = sum(sum(c.values()) for c in confusion.values())
    right = sum(c[gold] for gold, c in confusion.items())
    unknown = sum(c["unknown"] for c in confusion.values())
    wrong = total - right - unknown
    return {
        "n": total,
        "accuracy": round(right / total, 4) if total else 0.0,
        "unknown_rate": round(unknown / total, 4) if total else 0.0,
        "wrong_rate": round(wrong / total, 4) if total else 0.0,
        "per_language": {g: round(c[g] / sum(c.values()), 4) for g, c in sorted(confusion.items())},
        "confusion": {g: dict(c.most_common()) for g, c in sorted(confusion.items())},
    }


def tobi_rows(datasets: Path) -> list[dict[str, str]]:
    with (datasets / "support_tickets_multilang" / "tickets_dev.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def banking_texts(datasets: Path) -> list[str]:
    with (datasets / "banking77" / "train.csv").open(encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def check(datasets: Path, detect: Callable[[str], str] = detect_language) -> dict[str, dict[str, Any]]:
    """Every set's figures; `detect` is the detector under test (the normalize node's by default)."""
    tobi = tobi_rows(datasets)
    full = [(r["language"], graph_text(r["subject"], r["body"])) for r in tobi]
    seed = [json.loads(line) for line in (ROOT / "knowledge_base" / "seed" / "handwritten.jsonl").open(encoding="utf-8")]
    return {
        "tobi subject+body": score((g, detect(t)) for g, t in full),
        "tobi body": score((r["language"], detect(graph_text("", r["body"]))) for r in tobi),
        f"tobi first {HEAD_CHARS} chars": score((g, detect(head(t))) for g, t in full),
        "seed handwritten": score((s["language"], detect(graph_text(s["subject"], s["body"]))) for s in seed),
        "banking77 (en)": score(("en", detect(graph_text("", t))) for t in banking_texts(datasets)),
        "log-like (en)": score(("en", detect(graph_text("", t))) for t in LOG_TICKETS),
    }


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| set | n | accuracy | unknown | wrong | per language |", "|---|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        per = ", ".join(f"{g} {v:.3f}" for g, v in r["per_language"].items())
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.4f} | {r['unknown_rate']:.4f} | {r['wrong_rate']:.4f} | {per} |")
    lines.append("")
    for name, r in results.items():
        mistakes = {g: {k: v for k, v in c.items() if k != g} for g, c in r["confusion"].items()}
        mistakes = {g: m for g, m in mistakes.items() if m}
        if mistakes:
            lines.append(f"{name} misses (gold: detected count): " + "; ".join(f"{g}: {m}" for g, m in mistakes.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.language_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets", help="the datasets folder (default ../shared/datasets)")
    parser.add_argument("--json", type=Path, help="also write the figures (with the confusion) to this JSON file")
    args = parser.parse_args(argv)
    if not (args.datasets / "support_tickets_multilang" / "tickets_dev.csv").is_file():
        print(f"no support_tickets_multilang/tickets_dev.csv under {args.datasets}; pass --datasets", file=sys.stderr)
        return 2
    results = check(args.datasets)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
