"""Evals: `triage eval` reports as pictures (confusion, coverage vs precision, reliability, per-class F1); compare runs."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import streamlit as st

from ui.common import settings
from ui.evals_data import (
    METRICS,
    Report,
    compare,
    confusion_of,
    coverage_of,
    find_reports,
    latency_caveat,
    load_report,
    per_class_f1,
    reliability_of,
    summary,
)

NONE = "(none)"


@st.cache_data(show_spinner=False, max_entries=16)
def cached_report(path: str, name: str, mtime: float) -> Report:
    return load_report(Path(path), name)


def get(reports: dict[str, Path], name: str) -> Report | None:
    path = reports[name]
    try:
        return cached_report(str(path), name, (path / "metrics.json").stat().st_mtime)
    except (ValueError, OSError) as exc:
        st.error(f"The report `{name}` cannot be read: {exc}", icon=":material/science:")
        return None


def heat_map(report: Report, axis: str) -> None:
    rows = confusion_of(report, axis)
    if not rows:
        return
    step = 28 if len({r["pred"] for r in rows}) <= 12 else 14
    chart = (
        alt.Chart(alt.Data(values=rows))
        .mark_rect()
        .encode(
            x=alt.X("pred:N", title="predicted", sort="ascending", axis=alt.Axis(labelLimit=160)),
            y=alt.Y("gold:N", title="gold", sort="ascending", axis=alt.Axis(labelLimit=160)),
            color=alt.Color("share:Q", title="share of gold row", scale=alt.Scale(scheme="blues")),
            tooltip=["gold:N", "pred:N", "count:Q", alt.Tooltip("share:Q", format=".0%")],
        )
        .properties(width=alt.Step(step), height=alt.Step(step), title=f"{report.name} · {axis}: confusion matrix")
    )
    st.altair_chart(chart, width="content")


def curves(reports: list[Report], axis: str) -> None:
    cov = [{**p, "run": r.name} for r in reports for p in coverage_of(r, axis)]
    rel = [{**p, "run": r.name} for r in reports for p in reliability_of(r, axis)]
    left, right = st.columns(2)
    if cov:
        target = next((m["target_precision"] for m in summary(reports[0]) if m["axis"] == axis), None)
        line = (
            alt.Chart(alt.Data(values=cov))
            .mark_line(point=True)
            .encode(
                x=alt.X("coverage:Q", title="coverage (share auto-applied)", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("precision:Q", title="precision", scale=alt.Scale(zero=False)),
                color="run:N",
                tooltip=["run:N", "coverage:Q", "precision:Q", "threshold:Q"],
            )
        )
        if target:
            line = line + alt.Chart(alt.Data(values=[{"target": target}])).mark_rule(strokeDash=[4, 4], color="red").encode(y="target:Q")
        left.altair_chart(line.properties(title=f"{axis}: coverage vs precision", height=320))
    if rel:
        diagonal = alt.Chart(alt.Data(values=[{"x": 0, "y": 0}, {"x": 1, "y": 1}])).mark_line(strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
        points = (
            alt.Chart(alt.Data(values=rel))
            .mark_line(point=True)
            .encode(
                x=alt.X("confidence:Q", title="mean confidence", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
                color="run:N",
                size=alt.Size("count:Q", legend=None),
                tooltip=["run:N", "confidence:Q", "accuracy:Q", "count:Q"],
            )
        )
        right.altair_chart((diagonal + points).properties(title=f"{axis}: reliability diagram", height=320))
    if not cov and not rel:
        st.caption("No predictions.jsonl in this report, so these are the pictures the run drew itself:")
        for run in reports:
            pngs = [p for p in run.pngs if p.stem.endswith(f"_{axis}") and not p.stem.startswith("per_class_f1")]  # F1: drawn below
            for col, png in zip(st.columns(max(len(pngs), 1)), pngs, strict=False):
                col.image(str(png), caption=f"{run.name}: {png.name}")


def f1_bars(reports: list[Report], axis: str) -> None:
    rows = [{**c, "run": r.name} for r in reports for c in per_class_f1(r, axis)]
    if not rows:
        return
    chart = (
        alt.Chart(alt.Data(values=rows))
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort="x", title=None, axis=alt.Axis(labelLimit=200)),
            x=alt.X("f1:Q", title="F1", scale=alt.Scale(domain=[0, 1])),
            yOffset="run:N",
            color="run:N",
            tooltip=["run:N", "label:N", "f1:Q", "precision:Q", "recall:Q", "support:Q"],
        )
        .properties(height=alt.Step(10 * len(reports) + 4), title=f"{axis}: per-class F1")
    )
    st.altair_chart(chart)


# ---------------------------------------------------------------- the page

st.title("Evals")
root = settings().ui_reports_dir
reports = find_reports(root)
if not reports:
    st.info(
        f"No eval report under `{root}`. Run `triage eval ... --out {root}/NAME` (or set TRIAGE_UI_REPORTS_DIR).",
        icon=":material/science:",
    )
    st.stop()

names = list(reports)
pick = st.columns(2)
name_a = pick[0].selectbox("Run", names, key="evals_a")
name_b = pick[1].selectbox("Compare with", [NONE, *[n for n in names if n != name_a]], key="evals_b")
a = get(reports, name_a)
b = get(reports, name_b) if name_b != NONE else None
if a is None:
    st.stop()
runs = [a] + ([b] if b is not None else [])

st.subheader("Summary")
# readable headers with what each means (the keys of metrics.json read `macro_f1`, `ece`, `target_precision`)
st.dataframe(
    [row for r in runs for row in summary(r)],
    hide_index=True,
    column_config={key: st.column_config.NumberColumn(name, help=meaning, format="%.3f") for key, (name, meaning) in METRICS.items()},
)
if b is not None:
    st.subheader(f"B − A: `{b.name}` against `{a.name}`")
    st.dataframe(
        [{**row, "metric": METRICS.get(row["metric"], (row["metric"],))[0]} for row in compare(a, b)],
        hide_index=True,
        column_config={"metric": st.column_config.TextColumn("metric", help="; ".join(f"{n}: {m}" for n, m in METRICS.values()))},
    )
    caveat = latency_caveat(a, b)
    if caveat:
        st.warning(caveat, icon=":material/timer:")
st.caption(
    f"{a.metrics.get('n', '?')} test rows · mode {a.metrics.get('mode', '?')} · latency p50 "
    f"{(a.metrics.get('latency_ms') or {}).get('p50', '?')} ms · {a.metrics.get('throughput_per_s', '?')} tickets/s"
)

axes = [x for x in a.axes if b is None or x in b.axes] or a.axes
axis = (st.segmented_control("Axis", axes, default=axes[0], key="evals_axis") or axes[0]) if axes else None
if axis is not None:
    st.header(axis)
    curves(runs, axis)
    for col, run in zip(st.columns(len(runs)), runs, strict=True):
        with col:
            heat_map(run, axis)
    f1_bars(runs, axis)

if st.toggle("Show report.md and the run's own plots", key="evals_report"):  # drawn on demand: they are heavy
    for run in runs:
        st.subheader(f"`{run.name}`")
        st.markdown("\n".join(line for line in run.markdown.splitlines() if not line.startswith("![")))
        for png in run.pngs:
            st.image(str(png), caption=png.name)
