"""Insights: KPIs per service, channel and tier from `GET /v1/stats` (the same numbers any dashboard can read)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.common import PAGES, fetch, label_ids, label_names, taxonomy
from ui.format import escape_md, trend_scale, volume_rows

ANY = "any"
WINDOWS = {"last 7 days": 7, "last 30 days": 30, "last 90 days": 90, "last year": 365, "all time": None}


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


st.title("Insights")
tax = taxonomy()
cols = st.columns(5)
window = cols[0].selectbox("Window", list(WINDOWS), index=1, key="in_window")
group_by = cols[1].selectbox("Per", ["service", "channel", "tier"], key="in_group")
filters: dict[str, Any] = {}
for col, axis in zip(cols[2:], ("service", "channel", "tier"), strict=True):
    names = label_names(tax, axis)
    choice = col.selectbox(
        axis.capitalize(), [ANY, *label_ids(tax, axis)], key=f"in_{axis}", format_func=lambda v, n=names: v if v == ANY else n.get(v, v)
    )
    filters[axis] = None if choice == ANY else choice

# the browser's time zone: a lead's day, not UTC's (a ticket at 21:00 in New York is not tomorrow's)
stats = fetch("stats", days=WINDOWS[window], group_by=group_by, tz=st.context.timezone, **filters)
totals = stats["totals"]
group_names = label_names(tax, group_by)


def group(label: str) -> str:
    """A group as the queue names it ("Billing & payments", not `billing_payments`); "(all)" and ids the taxonomy
    no longer has stay as they are."""
    return group_names.get(label, label)


if not totals["tickets"]:
    st.info("No ticket in this window and filter yet: the KPIs start with the first stored ticket.", icon=":material/insights:")
    st.stop()

m = st.columns(6)
m[0].metric("Tickets", totals["tickets"])
decided = max(totals["auto_apply"] + totals["suggest"] + totals["needs_review"], 1)
m[1].metric("Auto-applied", f"{totals['auto_apply'] / decided:.0%}", help=f"{totals['auto_apply']} tickets")
m[2].metric("Suggested", f"{totals['suggest'] / decided:.0%}", help=f"{totals['suggest']} tickets")
m[3].metric("Sent to review", f"{totals['needs_review'] / decided:.0%}", help=f"{totals['needs_review']} tickets")
m[4].metric("Reviewed by a lead", totals["reviewed"])
m[5].metric(
    "Waiting for a lead",
    stats["pending"]["n"],
    help=f"Tickets no lead has decided yet, median wait {duration(stats['pending']['p50_wait_s'])}. The review queue "
    "also holds tickets a reject sent back (decided once, so not counted here).",
)

periods, volume = volume_rows(stats["volumes"], stats["bucket"])
scale = trend_scale(volume)
st.subheader(f"Volume per {stats['bucket']}")
if periods:
    st.caption(f"{periods[0]} to {periods[-1]}, one bar per {stats['bucket']} ({stats.get('timezone', 'UTC')})")
st.dataframe(
    [{**row, "per": group(row["per"])} for row in volume],
    hide_index=True,
    column_config={
        "trend": st.column_config.BarChartColumn(
            f"tickets per {stats['bucket']}", width="large", y_min=0, y_max=scale,
            help=f"One scale for every row: the tallest bar is {scale} tickets.",
        )
    },
)

left, right = st.columns(2)
with left:
    st.subheader("What the agent decided")
    percent = {"min_value": 0.0, "max_value": 1.0, "format": "percent"}
    st.dataframe(
        [{"per": group(r["group"]), "tickets": r["total"], "auto-applied": r["auto_apply_share"], "suggested": r["suggest_share"], "to review": r["needs_review_share"]} for r in stats["decisions"]],
        hide_index=True,
        column_config={name: st.column_config.ProgressColumn(name, **percent) for name in ("auto-applied", "suggested", "to review")},
    )
with right:
    st.subheader("Time from intake to a decision")
    rows = [
        {"per": group(r["group"]), "by": "agent (auto-apply)" if r["path"] == "auto" else "lead review", "tickets": r["n"], "median": duration(r["p50_s"]), "p90": duration(r["p90_s"])}
        for r in stats["time_to_decision"]
    ]
    if rows:
        st.dataframe(rows, hide_index=True)
    else:
        st.caption("No decision yet.")

st.subheader("Human overturn rate per label")
overturn = stats["overturn"]
if overturn:
    st.caption("Of the agent's labels a lead reviewed, the share the lead changed or rejected.")
    st.dataframe(
        [
            {"axis": r["axis"], "label": label_names(tax, r["axis"]).get(r["label"], r["label"]), "reviews": r["reviewed"],
             "overturned": r["overturned"], "rate": r["rate"]}
            for r in overturn
        ],
        hide_index=True,
        column_config={"rate": st.column_config.ProgressColumn("overturn rate", min_value=0.0, max_value=1.0, format="percent")},
    )
else:
    st.caption("No review yet: the rate appears with the first lead review.")

left, right = st.columns(2)
with left:
    st.subheader("KB articles the drafts cite")
    cited = stats["cited_articles"]
    st.caption(f"{stats['draft_rate']:.0%} of classified tickets got a draft.")
    if cited:
        st.dataframe(
            [{"article": r["title"], "id": r["article_id"], "drafts": r["drafts"]} for r in cited],
            hide_index=True,
            column_config={"drafts": st.column_config.ProgressColumn("drafts citing it", min_value=0, max_value=cited[0]["drafts"], format="%d")},
        )
with right:
    gaps = stats["kb_gaps"]
    st.subheader("KB gaps")
    st.caption(
        f"{gaps['weak']} of {gaps['tickets_with_kb_match']} tickets ({gaps['weak_share']:.0%}) have no KB article scoring "
        f"≥ {gaps['threshold']:.2f}; the {gaps['clustered']} most recent of them, clustered by their words:"
    )
    if not gaps["clusters"]:
        st.caption("No cluster of two or more similar weakly-matched tickets.")
    for i, cluster in enumerate(gaps["clusters"], 1):
        terms = escape_md(", ".join(cluster["terms"])) or "(no common words)"  # words of ticket text: shown as text
        with st.expander(f"{i}. {cluster['size']} tickets · {terms} · mostly {escape_md(str(cluster['service']))}", expanded=i == 1):
            st.caption(f"mean best KB score {cluster['mean_best_score']:.2f} · nearest article `{cluster['nearest_article']}`")
            for example in cluster["examples"]:
                # the label is ticket text: escaped, or a customer's `![](url)` loads an image from their server
                label = escape_md(" ".join(example["text"][:100].split())) or example["id"]
                st.page_link(PAGES["ticket"], label=label, query_params={"id": example["id"]})
                st.caption(escape_md(example["text"][100:280]))
