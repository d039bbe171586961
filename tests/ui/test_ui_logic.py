"""The UI's pure helpers (no Streamlit, no server): citations, the review to send, the timeline, batch files,
eval curves, the taxonomy diff, and the API client's error messages against a scripted transport."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agent.urls import rebound_host
from ui.api_client import ApiAuthError, ApiError, ApiNotFound, ApiRejected, ApiUnreachable, TriageClient
from ui.batch_io import flat_row, parse_tickets, to_csv
from ui.evals_data import Report, coverage_precision, per_class_f1, reliability
from ui.format import (
    Escalation,
    age_params,
    agent_classification,
    bold_line,
    bulk_accept_request,
    decision_badge,
    escape_md,
    health_notes,
    is_draft_warning,
    label_changes,
    link_citations,
    message_text,
    no_draft_reason,
    review_request,
    shown_warnings,
    tier_escalation,
    tiers_above,
    timeline,
    within_age,
)
from ui.taxonomy_diff import diff, migration_steps, migration_transitions, read_candidate


def test_citations_link_to_evidence_cards_and_unknown_ids_stay_text() -> None:
    md = link_citations("Like [btx-12] and [kb:refund]; not [nope]. *bold*", {"btx-12", "kb:refund"})
    assert ":orange-background[[btx\\-12](#ev-btx-12)]" in md and "(#ev-kb-refund)" in md
    assert "\\[nope\\]" in md and "\\*bold\\*" in md
    assert escape_md(":red[x] <b>") == "\\:red\\[x\\] \\<b\\>"


@pytest.mark.parametrize(
    "hostile",
    [
        "Refund please\n===\nthanks",  # a setext heading underline
        "AT&amp;T charged me &copy; &#x202E;",  # HTML entities
        "![pixel](http://evil.test/p.png) [login](http://evil.test) <b>hi</b> <http://evil.test>",
        "# Urgent\n> quoted\n* item\n1. step\n---\n~~gone~~ $x$ :red[alert] `code`",
    ],
)
def test_ticket_text_renders_as_the_text_the_customer_wrote(hostile: str) -> None:
    """Whatever markdown or HTML a ticket holds, the escaped text renders as one paragraph of exactly that text."""
    import html as html_lib
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(escape_md(hostile))
    assert rendered.startswith("<p>") and rendered.count("<p>") == 1, rendered
    assert not re.search(r"<(?!/?p>)", rendered), rendered  # no tag but the paragraph: no heading, link, image, code
    assert html_lib.unescape(rendered.removeprefix("<p>").removesuffix("</p>\n")) == hostile


def test_a_direction_override_in_ticket_text_ends_with_it() -> None:
    """A subject with U+202E (right-to-left override) left open reversed the rest of its queue row in the browser:
    `· needs review · 0.45` read `54.0 · weiver sdeen`. The escaped text closes what it opens, innermost first."""
    rlo, rli, pdf, pdi = "\u202e", "\u2067", "\u202c", "\u2069"
    assert escape_md(f"Refund {rlo}please") == f"Refund {rlo}please{pdf}"
    assert escape_md(f"{rli}a{rlo}b") == f"{rli}a{rlo}b{pdf}{pdi}" and escape_md(f"{rlo}a{rli}b") == f"{rlo}a{rli}b{pdi}{pdf}"
    assert escape_md(f"{rlo}closed{pdf} {rli}a{rlo}b{pdi}") == f"{rlo}closed{pdf} {rli}a{rlo}b{pdi}"  # nothing left open
    assert escape_md("مرحبا، لم يصلني الطرد") == "مرحبا، لم يصلني الطرد"  # right-to-left text as such is untouched


@pytest.mark.parametrize("text", ["ZD-1234_a.b", "tk_*[x](y)*", "a`b", "``x``", "`edge"])
def test_code_spans_show_the_text_exactly(text: str) -> None:
    import html as html_lib

    from markdown_it import MarkdownIt

    from ui.format import code_span

    rendered = MarkdownIt("commonmark").render(code_span(text))
    assert rendered.startswith("<p><code>") and rendered.endswith("</code></p>\n"), rendered
    assert html_lib.unescape(rendered.removeprefix("<p><code>").removesuffix("</code></p>\n")) == text


@pytest.mark.parametrize(
    ("chosen", "suggested", "expected"),
    [
        ({"service": "a", "tier": "L1"}, None, ("accept", None)),
        ({"service": "b", "tier": "L1"}, None, ("edit", {"service": "b"})),
        ({"service": "b", "tier": "L1"}, {"service": "b"}, ("accept", None)),  # accept takes the suggestion
        ({"service": "a", "tier": "L1"}, {"service": "b"}, ("edit", {"service": "a", "tier": "L1"})),  # keep the lead's
    ],
)
def test_the_review_sent_leaves_exactly_the_chosen_labels(chosen: dict, suggested: dict | None, expected: tuple) -> None:
    assert review_request({"service": "a", "tier": "L1"}, chosen, suggested) == expected


def test_timeline_says_who_changed_what_and_why_newest_first() -> None:
    revisions = [
        {"seq": 1, "reason": "new_ticket", "actor": "agent:x", "labels": {"service": "a", "tier": "L1"}, "classification": {"decision": "suggest", "rationale": "[t1]"}},
        {"seq": 2, "reason": "human_review", "actor": "user:ann", "labels": {"service": "b", "tier": "L1"}, "classification": {"decision": "auto_apply"}, "review": {"action": "edit", "comment": "billing"}, "rejected_by": 3},
        {"seq": 3, "reason": "human_review", "actor": "user:bob", "labels": None, "classification": None, "rejects": 2, "note": "no"},
    ]
    rows = timeline(revisions)
    assert [r["seq"] for r in rows] == [3, 2, 1]
    assert rows[0]["what"] == "rejected revision 2" and rows[0]["changes"] == ["service: b → a"] and rows[0]["why"] == "no"
    assert rows[1]["what"] == "edited the labels" and rows[1]["changes"] == ["service: a → b"] and rows[1]["rejected_by"] == 3
    assert rows[2]["changes"] == ["service: – → a", "tier: – → L1"] and rows[2]["why"] == "[t1]"
    assert label_changes({"tier": "L1"}, {"tier": "L1"}) == []


def test_age_filters() -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    old, new = (now - timedelta(days=8)).isoformat(), (now - timedelta(minutes=5)).isoformat()
    assert within_age(old, "older than 7 days", now) and not within_age(new, "older than 7 days", now)
    assert within_age(new, "last hour", now) and not within_age(old, "last 24 hours", now)
    assert age_params("last 7 days", now) == {"created_after": (now - timedelta(days=7)).isoformat()}


def test_a_semicolon_or_tab_separated_batch_csv_is_read_not_refused_for_its_header() -> None:
    """A CSV saved by a spreadsheet under German or Spanish settings separates with `;`; it was refused as having no
    subject/body column although its header named both."""
    data = "\ufeffid;subject;body;channel\nT-1;Rechnung doppelt;\"Zweimal belastet; bitte,\nerstatten\";email\n".encode()
    tickets, problems = parse_tickets("export.csv", data)
    assert problems == [] and [(t.ticket_id, t.subject, t.body, t.channel) for t in tickets] == [
        ("T-1", "Rechnung doppelt", "Zweimal belastet; bitte,\nerstatten", "email")
    ]
    tickets, problems = parse_tickets("export.csv", b"subject\tbody\nHi, there\tBody; one\n")
    assert problems == [] and [(t.subject, t.body) for t in tickets] == [("Hi, there", "Body; one")]
    assert [t.body for t in parse_tickets("t.csv", b"subject,body\nA;B,C\n")[0]] == ["C"]  # a comma header wins


def test_a_queue_subject_cut_on_a_space_still_reads_bold_not_with_its_asterisks() -> None:
    """'Solicitando asesoría experta para la optimización de costos en los servicios de AWS' cut at 80 characters
    ended on a space, and the queue showed '**Solicitando ... de **' with its asterisks."""
    subject = "Solicitando asesoría experta para la optimización de costos en los servicios de AWS"
    line = bold_line(subject)
    assert line.startswith("**Solicitando") and line.endswith("servicios de…**") and not line[:-2].endswith(" ")
    assert bold_line("\n  Hello   there\n") == "**Hello there**"  # a body preview that starts on a new line
    assert bold_line("short") == "**short**" and bold_line("   ") == ""
    assert bold_line("x" * 200) == "**" + "x" * 79 + "…**"
    assert bold_line("**not bold** <b>x</b>") == "**\\*\\*not bold\\*\\* \\<b\\>x\\</b\\>**"


def test_batch_files_map_columns_and_report_each_bad_row() -> None:
    tickets, problems = parse_tickets("t.csv", b"ID,Title,Text,Channel,priority\n1,Hi,Body one,email,high\n2,,,chat,\n")
    assert [(t.ticket_id, t.subject, t.body, t.channel) for t in tickets] == [("1", "Hi", "Body one", "email")]
    assert problems == ["line 3: no text (subject, body and messages are empty)"]
    _, problems = parse_tickets("t.csv", b"a,b\n1,2\n")
    assert "needs a header row" in problems[0]
    tickets, problems = parse_tickets("t.jsonl", b'{"body": "x", "messages": [{"author": "robot", "text": "y"}]}\n[1]\n')
    assert tickets == [] and problems[0].startswith("line 1: messages.0.author") and "expected an object" in problems[1]
    row = flat_row(1, parse_tickets("t.csv", b"text\nhello\n")[0][0], {"labels": {"service": {"label": "s", "confidence": 0.5}}, "decision": "suggest"}, None)
    assert row["service"] == "s" and row["service_confidence"] == 0.5 and row["tier"] is None
    assert to_csv([row]).decode().splitlines()[0].startswith("row,id,subject,service")


def test_a_csv_the_csv_module_cannot_read_is_a_problem_line_not_a_traceback() -> None:
    """A quote left open swallows the rest of the file into one cell over the csv module's 128 KiB limit (its
    default; the limit is process-wide and the eval loaders raise it, so the test sets it)."""
    previous = csv.field_size_limit(128 * 1024)
    try:
        _unreadable_csv_is_a_problem_line()
    finally:
        csv.field_size_limit(previous)


def _unreadable_csv_is_a_problem_line() -> None:
    data = b'subject,body\nfirst,fine\n"second,a quote left open\n' + b"words " * 30_000 + b"\nthird,never read\n"
    tickets, problems = parse_tickets("open-quote.csv", data)
    assert [t.subject for t in tickets] == ["first"]
    assert len(problems) == 1 and problems[0].startswith("line 3: cannot be read as CSV (field larger than field limit")
    assert "a quote left open" in problems[0]
    tickets, problems = parse_tickets("t.csv", b'subject,body\n"multi\nline",x\nlast,' + b"y" * 200_000 + b"\n")
    assert [t.subject for t in tickets] == ["multi\nline"] and problems[0].startswith("line 4: cannot be read as CSV")


def test_a_json_file_may_hold_an_array_of_tickets() -> None:
    """The uploader takes `.json`: an exported array (pretty-printed or not) is read item by item."""
    pretty = json.dumps([{"subject": "Hi", "body": "one"}, {"body": "two", "channel": "chat"}, "three", {"subject": ""}], indent=2)
    tickets, problems = parse_tickets("export.json", pretty.encode())
    assert [(t.subject, t.body, t.channel) for t in tickets] == [("Hi", "one", None), ("", "two", "chat")]
    assert problems == ["item 3: expected an object with subject/body, got str", "item 4: no text (subject, body and messages are empty)"]
    assert [t.body for t in parse_tickets("one.json", b'{"body": "alone"}')[0]] == ["alone"]
    tickets, problems = parse_tickets("lines.json", b'{"body": "a"}\n{"body": "b"}\n"c"\n')  # JSON lines named .json
    assert [t.body for t in tickets] == ["a", "b"] and problems == ["line 3: expected an object with subject/body, got str"]


def test_eval_curves_from_predictions() -> None:
    rows = [{"axis": "service", "gold": g, "pred": p, "confidence": c, "correct": g == p} for g, p, c in
            [("a", "a", 0.95), ("a", "b", 0.9), ("b", "b", 0.6), ("b", "b", 0.55), ("a", "a", 0.1)]]
    curve = coverage_precision(rows, points=5)
    assert curve[0] == {"coverage": 0.2, "precision": 1.0, "threshold": 0.95} and curve[-1] == {"coverage": 1.0, "precision": 0.8, "threshold": 0.1}
    bins = {round(b["bin"], 2): b for b in reliability(rows)}
    assert bins[0.95]["accuracy"] == 0.5 and bins[0.95]["count"] == 2 and bins[0.15]["accuracy"] == 1.0
    f1 = {c["label"]: c for c in per_class_f1(Report("r", None, {"axes": {"service": {}}}, rows=rows), "service")}  # type: ignore[arg-type]
    assert f1["a"]["recall"] == round(2 / 3, 4) and f1["b"]["precision"] == round(2 / 3, 4) and f1["a"]["support"] == 3


def test_taxonomy_diff() -> None:
    old = {"axes": {"service": {"fallback": "x", "labels": [{"id": "x", "name": "X", "description": "d"}, {"id": "y", "name": "Y", "description": "e"}]}}}
    new = {"axes": {"service": {"fallback": "z", "labels": [{"id": "x", "name": "X", "description": "d  changed", "routing": {"team": "T"}}, {"id": "z", "name": "Z", "description": ""}]}}}
    rows = [(r["label"], r["change"], r["field"]) for r in diff(old, new)]
    assert rows == [("y", "removed", ""), ("z", "added", ""), ("x", "changed", "description"), ("x", "changed", "routing"), ("", "fallback", "fallback")]
    assert diff(old, old) == []


def test_migration_tables_read_the_taxonomy_and_report_as_the_api_serves_them(tmp_path) -> None:  # noqa: ANN001
    from agent.taxonomy import load_taxonomy
    from evals.migration_demo import STEPS, write_v2

    served = load_taxonomy(write_v2(tmp_path / "v2.yaml")).model_dump(mode="json", by_alias=True)
    steps = migration_steps(served)
    assert [(s["op"], s["from"], s["to"]) for s in steps] == [
        ("rename", "it_help_desk", "service_desk"), ("merge", "network, cloud", "infrastructure"),
        ("split", "technical_support", "software_application, hardware"), ("retire", "feedback_complaints", "general_information"),
    ]
    assert migration_steps(load_taxonomy(tmp_path / "v2.yaml").model_dump(mode="json")) == steps  # stored content (from_)
    assert migration_steps({"axes": {}}) == []
    assert {s["rules"] for s in steps} == {""}
    ruled = {"op": "split", "axis": "service", "from": "technical_support", "to": ["software_application", "hardware"],
             "rules": [{"to": "hardware", "keywords": ["laptop", "printer"]},
                       {"to": "software_application", "pattern": "crash", "when": {"tier": ["L3"]}}]}
    ruled_v2 = load_taxonomy(write_v2(tmp_path / "v2r.yaml", steps=[s for s in STEPS if s["op"] != "split"] + [ruled]))
    assert migration_steps(ruled_v2.model_dump(mode="json", by_alias=True))[-1]["rules"] == (
        "hardware if keywords laptop, printer; software_application if pattern /crash/ and tier in L3; otherwise the agent chooses")
    report = {"transitions": {"service": {"cloud -> infrastructure": 3, "it_help_desk -> service_desk": 5}, "tier": {"L1 -> L2": 3}}}
    assert [(r["axis"], r["from"], r["to"], r["tickets"]) for r in migration_transitions(report)] == [
        ("service", "it_help_desk", "service_desk", 5), ("service", "cloud", "infrastructure", 3), ("tier", "L1", "L2", 3)]


def client_answering(status: int, body: object) -> TriageClient:
    return TriageClient("http://api.test", "trg_k", transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))


def test_client_errors_say_what_happened_and_what_to_do() -> None:
    with pytest.raises(ApiAuthError, match="invalid, revoked or expired") as err:
        client_answering(401, {"error": "unauthorized", "detail": "the API key is unknown"}).review_queue()
    assert "triage keys create --scope lead" in (err.value.hint or "")
    with pytest.raises(ApiAuthError, match="may not do this: needs lead") as err:
        client_answering(403, {"error": "forbidden", "detail": "needs lead"}).review_queue()
    with pytest.raises(ApiNotFound, match="no ticket"):
        client_answering(404, {"error": "not_found", "detail": "no ticket 'x'"}).ticket("x")
    with pytest.raises(ApiRejected, match="labels.service: bad"):
        client_answering(422, {"detail": [{"loc": ["labels", "service"], "msg": "bad"}]}).review("x", "edit", labels={"service": "?"})
    unreachable = TriageClient("http://api.test", None, transport=httpx.MockTransport(lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused"))))
    with pytest.raises(ApiUnreachable, match="Cannot reach the triage API at http://api.test"):
        unreachable.health()
    # the cause in a lead's words, not `(ConnectError: [Errno 111] Connection refused)`
    for raised, cause in (
        (httpx.ConnectError("[Errno 111] Connection refused"), "nothing answers there (connection refused); the API is not running"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "the host name in the URL is not known"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "the connection closed before an answer came"),
    ):
        failing = TriageClient("http://api.test", None, transport=httpx.MockTransport(lambda r, e=raised: (_ for _ in ()).throw(e)))
        with pytest.raises(ApiUnreachable) as err:
            failing.health()
        assert str(err.value).startswith(f"Cannot reach the triage API at http://api.test: {cause}"), str(err.value)
        assert "Errno" not in str(err.value) and "Error:" not in str(err.value)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "x"})

    TriageClient("http://api.test", "trg_k", transport=httpx.MockTransport(record)).review("x", "reject", comment="no", revision=3)
    assert json.loads(seen[0].content) == {"action": "reject", "comment": "no", "revision": 3}
    assert seen[0].headers["authorization"] == "Bearer trg_k"


def test_the_key_can_come_from_a_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.config import UiSettings

    monkeypatch.delenv("TRIAGE_API_KEY", raising=False)
    (tmp_path / "ui.key").write_text("trg_from_file\n")
    assert UiSettings(api_key_file=tmp_path / "ui.key").resolved_api_key == "trg_from_file"
    assert UiSettings(api_key="trg_env", api_key_file=tmp_path / "ui.key").resolved_api_key == "trg_env"
    assert UiSettings(api_key_file=tmp_path / "missing").resolved_api_key is None


def test_eval_pictures_fall_back_to_the_compact_arrays_of_details_json() -> None:
    from ui.evals_data import confusion_of, coverage_of, reliability_of

    details = {"axes": {"service": {
        "confusion": [{"gold": "a", "pred": "a", "count": 3}, {"gold": "a", "pred": "b", "count": 1}],
        "coverage_curve": [{"coverage": 0.5, "precision": 1.0, "threshold": 0.8}],
        "reliability": [{"confidence": 0.9, "accuracy": 0.8, "count": 4}],
    }}}
    report = Report("r", None, {"axes": {"service": {}}}, details=details)  # type: ignore[arg-type]
    assert confusion_of(report, "service") == [{"gold": "a", "pred": "a", "count": 3, "share": 0.75}, {"gold": "a", "pred": "b", "count": 1, "share": 0.25}]
    assert coverage_of(report, "service")[0]["precision"] == 1.0 and reliability_of(report, "service")[0]["count"] == 4
    assert confusion_of(Report("e", None, {}), "service") == []  # type: ignore[arg-type]


def test_volume_rows_fill_missing_periods_and_put_all_first() -> None:
    from ui.format import volume_rows

    periods, rows = volume_rows([
        {"period": "2026-11-02", "group": "billing", "count": 2},
        {"period": "2026-11-04", "group": "network", "count": 5},
        {"period": "2026-11-04", "group": "billing", "count": 1},
    ])
    assert periods == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert rows == [
        {"per": "(all)", "tickets": 8, "trend": [2, 0, 6]},
        {"per": "network", "tickets": 5, "trend": [0, 0, 5]},
        {"per": "billing", "tickets": 3, "trend": [2, 0, 1]},
    ]
    weeks, _ = volume_rows([{"period": "2026-11-02", "group": "a", "count": 1}, {"period": "2026-11-16", "group": "a", "count": 1}], "week")
    assert weeks == ["2026-11-02", "2026-11-09", "2026-11-16"]


def test_volume_bars_of_every_row_share_one_scale() -> None:
    """Each row's bars were scaled to that row alone: on one day of data every row drew one full-width bar, so 4
    tickets looked like 21. The page now gives every row the top of the largest count."""
    from ui.format import trend_scale, volume_rows

    _, rows = volume_rows([{"period": "2026-12-06", "group": "billing", "count": 4}, {"period": "2026-12-06", "group": "network", "count": 1}])
    assert trend_scale(rows) == 5  # the (all) row's 5: billing's bar is 4/5 of it, network's 1/5
    assert trend_scale([]) == 1  # an empty table still has a scale Streamlit accepts


def test_run_comparison_warns_when_latencies_were_measured_differently() -> None:
    from ui.evals_data import latency_caveat

    def run(name: str, timings: dict | None) -> Report:
        details = {} if timings is None else {"context": {"timings": timings}}
        return Report(name, None, {"axes": {}}, details=details)  # type: ignore[arg-type]

    ahead, ahead_too = run("new", {"embed_test_s": 9.6, "total_s": 160.0}), run("newer", {"embed_test_s": 9.1})
    inside, unknown = run("old", {"total_s": 170.0}), run("bare", None)
    assert latency_caveat(ahead, ahead_too) is None and latency_caveat(inside, inside) is None
    assert "`old` counts embedding each test ticket inside the graph" in (latency_caveat(ahead, inside) or "")
    assert latency_caveat(inside, ahead) == latency_caveat(ahead, inside)
    assert "`bare` does not say how its latency was measured" in (latency_caveat(ahead, unknown) or "")
    # two runs of the same name (one mode of two configs, say) are still told apart
    assert "counts embedding each test ticket inside the graph" in (latency_caveat(run("proposal", {"embed_test_s": 1.0}), run("proposal", {})) or "")


def test_a_degraded_api_is_explained_in_the_sidebar_not_shown_as_up() -> None:
    """The sidebar said "API up" in green while /healthz answered degraded (the LLM skipped, the embedded LLM or
    the records down): a lead could not tell why every suggestion went to review."""
    assert health_notes([], {"state": "closed", "retry_in_s": None}) == [] and health_notes([], None) == []
    notes = health_notes(
        ["embedded LLM: exited with code -9; it is being started again"],
        {"state": "open", "retry_in_s": 27.4, "last_error": "Connection error."},
    )
    assert notes[0] == escape_md("embedded LLM: exited with code -9; it is being started again")
    assert notes[1].startswith(escape_md("LLM skipped for 27 s after failures (Connection error.)"))
    assert "classifier head only" in notes[1]



def test_classify_waits_out_a_busy_api_and_tries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch row sent while the API's worker pool was full failed for good (503 + Retry-After); it is now sent
    again after the wait the API asked for, and a 503 without Retry-After (a part down) still fails at once."""
    answers = [httpx.Response(503, json={"error": "busy", "detail": "retry in 2 s"}, headers={"Retry-After": "2"})] * 2
    ok = {"labels": {}, "decision": "needs_review", "rationale": "", "evidence": {}, "route": {"team": "t1"}, "model": "m", "taxonomy_version": "t", "latency_ms": 1}
    sent, waits = [], []
    monkeypatch.setattr("ui.api_client.time.sleep", waits.append)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0) if answers else httpx.Response(200, json=ok)

    client = TriageClient("http://api.test", "trg_k", transport=httpx.MockTransport(handler))
    assert client.classify({"subject": "s", "body": "b"}, busy_retries=3).decision == "needs_review"
    assert len(sent) == 3 and waits == [2.0, 2.0]
    down = TriageClient("http://api.test", "trg_k", transport=httpx.MockTransport(lambda r: httpx.Response(503, json={"detail": "store down"})))
    with pytest.raises(ApiError) as err:
        down.classify({"subject": "s"}, busy_retries=3)
    assert err.value.status == 503 and err.value.retry_after_s is None


def test_an_escalation_offers_only_the_tiers_above_the_current_one() -> None:
    tiers = ["L1", "L2", "L3"]
    assert tiers_above(tiers, "L1") == ["L2", "L3"]
    assert tiers_above(tiers, "L3") == []
    assert tiers_above(tiers, None) == tiers  # every labelled revision rejected: any tier
    assert tiers_above(tiers, "L0") == tiers  # a tier the taxonomy no longer has


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"name: x\nversion: '1'\naxes: [\n", r"^next.yaml is not valid YAML: line 4, column 1: "),
        (b"name: caf\xe9\n", r"^next.yaml is not UTF-8 text \(byte 0xe9 on line 1\)"),
        (b"name: x\nname: y\n", r"^next.yaml line 2: key 'name' is written twice"),
        (b"name: x\nversion: '1'\naxes: {}\n", r"^next.yaml is invalid: axes: taxonomy lacks axes \['service', 'channel', 'tier'\]"),
    ],
)
def test_a_candidate_taxonomy_that_is_not_usable_says_what_is_wrong_on_one_line(data: bytes, problem: str) -> None:
    """The Taxonomy page showed pydantic's first line, '1 validation error for Taxonomy', for any invalid file (no
    field, no fix), PyYAML's 'while parsing a flow node' (no line), let a key written twice through, and a file next
    to the app that was not UTF-8 was a traceback; it now reads a candidate as `triage taxonomy validate` does."""
    import re

    content, message = read_candidate("next.yaml", data)
    assert content is None and message is not None and re.search(problem, message) and "\n" not in message, message


def test_a_usable_candidate_taxonomy_is_its_content() -> None:
    from agent.settings import REPO_ROOT

    data = (REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml").read_bytes()
    content, problem = read_candidate("default.yaml", data)
    assert problem is None and content is not None and content["name"] == "default" and len(content["axes"]["tier"]["labels"]) == 3


def test_no_draft_says_the_agents_reason() -> None:
    """The ticket page said "no KB article was close enough" for every missing draft, also for a ticket out of
    scope, one in a language the embedder cannot match, or one whose only articles are agent guidelines."""
    said = {"warnings": ["ticket text truncated", "no draft: no KB article is close enough (best [kb-1] 0.21 < 0.35)"], "out_of_scope": False}
    assert no_draft_reason(said) == "No draft: no KB article is close enough (best [kb-1] 0.21 < 0.35)."
    guideline = {"warnings": ["the LLM's draft was empty or echoed the ticket; no customer-facing article to draft from"]}
    assert no_draft_reason(guideline).endswith("no customer-facing article to draft from.")
    assert no_draft_reason({"warnings": ["out of scope: ..."], "out_of_scope": True}) == "No draft: the ticket is out of scope."
    assert no_draft_reason({}) == "No draft: no KB article was close enough to ground an answer."


def test_a_reviewed_ticket_keeps_the_agents_no_draft_reason() -> None:
    """A review clears the warnings: "No draft:" fell back to "no KB article was close enough" whatever the agent
    had said. The reason now comes from the agent's classification the review was made from."""
    said = {"warnings": ["no draft: the ticket reads as de"], "out_of_scope": False}
    revisions = [
        {"seq": 1, "reason": "new_ticket", "classification": {"warnings": ["no draft: old reason"]}},
        {"seq": 2, "reason": "new_message", "classification": said},
        {"seq": 3, "reason": "human_review", "classification": {"warnings": []}},
        {"seq": 4, "reason": "reclassify", "classification": {"warnings": ["no draft: rejected one"]}},
        {"seq": 5, "reason": "human_review", "classification": None, "rejects": 4},
    ]
    assert agent_classification(revisions, 3) is said and agent_classification(revisions, 5) is said
    assert agent_classification(revisions[:1], None) is revisions[0]["classification"] and agent_classification([], 1) is None
    reviewed = {"warnings": [], "out_of_scope": False}
    assert no_draft_reason(reviewed, agent_classification(revisions, 3)) == "No draft: the ticket reads as de."
    assert no_draft_reason(reviewed, None).endswith("no KB article was close enough to ground an answer.")
    assert is_draft_warning("no draft: x") and not is_draft_warning("tier kept at L2")


def test_a_warning_quoting_the_llm_endpoints_reply_shows_as_text() -> None:
    """Warnings went to st.warning as markdown: "LLM unreachable ...: <the endpoint's reply>" rendered a reply's
    link, image (fetched by the lead's browser) or `:red[...]` directive as the UI's own. They are escaped like
    ticket text, and the one saying why there is no draft is still left to the draft section."""
    import html as html_lib
    import re

    from markdown_it import MarkdownIt

    reply = "LLM unreachable, labels come from the proposal: 502 ![x](http://evil.test/p.png) [re-login](http://evil.test) :red[**key revoked**]"
    shown = shown_warnings({"warnings": [reply, "no draft: no KB article is close enough"], "draft": None})
    assert len(shown) == 1
    rendered = MarkdownIt("commonmark").render(shown[0])
    assert not re.search(r"<(?!/?p>)", rendered), rendered  # no link, image or emphasis
    assert html_lib.unescape(rendered.removeprefix("<p>").removesuffix("</p>\n")) == reply
    assert shown_warnings({"warnings": ["no draft: x", "a_b"], "draft": {"text": "hi"}}) == ["no draft\\: x", "a\\_b"]
    assert shown_warnings({}) == []


@pytest.mark.parametrize(
    ("bind", "host", "refused"),
    [
        ("127.0.0.1", "evil.test:8501", "evil.test"),  # a page's own name re-pointed at 127.0.0.1
        ("localhost", "evil.test", "evil.test"),
        ("::1", "127.0.0.1.evil.test:8501", "127.0.0.1.evil.test"),
        ("127.0.0.1", "127.0.0.1:8501", None),
        ("127.0.0.1", "localhost:8501", None),
        ("127.0.0.1", "[::1]:8501", None),
        ("127.0.0.1", None, None),  # not a browser
        ("0.0.0.0", "triage.example.com", None),  # bound to the network: a proxy's own name
        ("192.168.1.20", "triage.example.com:443", None),
        (None, "evil.test:8501", None),  # no address: all interfaces
    ],
)
def test_a_ui_bound_to_loopback_refuses_another_hosts_name(bind: str | None, host: str | None, refused: str | None) -> None:
    assert rebound_host(bind, host) == refused


def test_an_escalated_tier_names_who_escalated_it() -> None:
    """An escalated tier is stored with source `intake` (the contract enumerates its sources), so the ticket page read
    "intake" for a tier a lead had raised. The escalation that set the tier in force is found, through re-runs
    that kept it, and not once the tier changed again or the escalation was rejected."""

    def rev(seq: int, reason: str, tier: str, source: str, **more: object) -> dict:
        return {"seq": seq, "reason": reason, "classification": {"labels": {"tier": {"label": tier, "source": source}}}, **more}

    history = [
        rev(1, "new_ticket", "L1", "llm"),
        rev(2, "escalation", "L2", "intake", requested_by="alice", note="office down"),
        rev(3, "new_message", "L2", "intake", requested_by="bot"),
    ]
    assert tier_escalation(history, 3) == Escalation("L2", "alice", "office down")
    assert tier_escalation(history, 1) is None
    assert tier_escalation([*history, rev(4, "human_review", "L2", "human")], 4) is None  # a lead's label now
    assert tier_escalation([*history, {"seq": 4, "reason": "human_review", "classification": None, "rejects": 3},
                            {"seq": 5, "reason": "human_review", "classification": None, "rejects": 2}], 1) is None
    no_op = [rev(1, "new_ticket", "L3", "llm"), rev(2, "escalation", "L3", "llm", requested_by="bob")]  # already at the top
    assert tier_escalation(no_op, 2) is None
    assert tier_escalation([rev(1, "escalation", "L2", "intake", actor="agent:m")], 1) == Escalation("L2", "agent:m", "")


def test_a_bulk_accept_leaves_each_rows_labels_as_the_row_shows_them() -> None:
    labels = {"service": "billing_payments", "channel": "email", "tier": "L1"}
    assert bulk_accept_request({"labels": labels, "current": {"suggestion": {}}}) == ("accept", None)
    # the API's accept would take the agent's suggestion where a lead's label held: send the row's labels instead
    suggested = {"current": {"suggestion": {"service": {"label": "returns_refunds", "confidence": 0.8}}}}
    assert bulk_accept_request({"labels": labels, **suggested}) == ("edit", labels)
    assert bulk_accept_request({"labels": None, "current": None}) is None  # every labelled revision rejected


def test_a_thread_message_keeps_its_lines_shows_html_as_text_and_cuts_a_long_one() -> None:
    """Markdown joined a message's lines into one paragraph, an HTML e-mail showed as its tags, and a 100,000-character
    log pushed the rest of the ticket page thousands of pixels down."""
    from markdown_it import MarkdownIt

    lines = message_text("Hello,\nline one\nline two")
    assert MarkdownIt("commonmark").render(lines.shown).count("<br />") == 2 and not lines.rest and not lines.was_html
    html = message_text("<html><body><p>I want a <strong>refund</strong>.</p><script>alert(1)</script></body></html>")
    assert html.was_html and "strong" not in html.shown and "alert" not in html.shown and "refund" in html.shown
    log = "ERROR export failed on node a-17\n" * 3000
    cut = message_text(log, shown=3000)
    assert len(cut.shown) < 4000 and cut.rest_chars > 90_000 and cut.rest.startswith("ERROR")
    assert len(cut.shown.replace("\\", "").replace("  \n", "\n")) + cut.rest_chars + 1 == len(log.strip())


def test_an_html_link_shows_its_address_where_its_text_does_not() -> None:
    """An HTML e-mail's link showed as its text alone, so a lead could not see that 'https://bank.example' went
    somewhere else; the address now follows the text in brackets (as text, never a live link), unless the text is
    the address. The agent still reads the words alone."""
    from markdown_it import MarkdownIt

    from agent.email_text import strip_html

    mail = ('<p>Please <a href="http://phish.example/login?a=1&amp;b=2">verify here</a> or open '
            "<a href='https://bank.example'>https://bank.example</a>, "
            '<a href="mailto:help@bank.example">help@bank.example</a>, <a href="#top">top</a>.</p>')
    shown = message_text(mail).shown
    rendered = MarkdownIt("commonmark").render(shown)
    assert "verify here (http://phish.example/login?a=1&amp;b=2)" in rendered, rendered  # & as an entity in HTML
    assert "bank.example (" not in rendered and "help@bank.example (" not in rendered and "top (" not in rendered
    assert "<a " not in rendered, rendered
    assert "phish" not in strip_html(mail)


def test_a_leads_review_reads_as_one_not_as_auto_applied() -> None:
    assert decision_badge("auto_apply", "human_review") == ":blue-badge[reviewed by a lead]"
    assert decision_badge("auto_apply", "new_ticket") == ":green-badge[auto-applied]"
    assert decision_badge(None, "human_review") == ""  # a reject marker
