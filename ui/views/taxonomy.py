"""Taxonomy: the labels with descriptions and routing, the versions served, and the diff between two versions."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ui.api_client import ApiAuthError, ApiError, ApiNotFound
from ui.common import api_errors, client, settings, show_error, taxonomy
from ui.format import code_span, escape_md
from ui.taxonomy_diff import AXES, diff, is_next_version, migration_steps, migration_transitions, read_candidate


def label_table(tax: dict[str, Any], axis: str) -> list[dict[str, Any]]:
    return [
        {
            "id": label["id"],
            "name": label.get("name", ""),
            "description": " ".join((label.get("description") or "").split()),
            "team": (label.get("routing") or {}).get("team", ""),
            "queue": (label.get("routing") or {}).get("queue") or "",
            "examples": len(label.get("examples") or []),
        }
        for label in tax["axes"][axis]["labels"]
    ]


def parse_yaml(name: str, data: bytes) -> dict[str, Any] | None:
    content, problem = read_candidate(name, data)
    if problem is not None:
        st.error(f"Not a usable taxonomy: {escape_md(problem)}", icon=":material/label:")
    return content


def candidates(current_ref: str) -> dict[str, Any]:
    """Other versions to compare with: served versions (if the API gives their content) and YAMLs next to the app."""
    found: dict[str, Any] = {}
    try:
        for version in client().taxonomy_versions():
            if version["ref"] != current_ref:
                found[f"served: {version['ref']}"] = ("api", version["ref"])
    except ApiAuthError:
        st.caption("The list of served versions needs a lead key; YAML files and uploads can still be compared.")
    except ApiError as err:
        show_error(err)
    root = settings().ui_taxonomies_dir
    for path in sorted(root.glob("*.yaml")) if root.is_dir() else []:
        found[f"file: {path.name}"] = ("file", path)
    return found


st.title("Taxonomy")
tax = taxonomy()
st.caption(f"In force: **{escape_md(tax['name'])}@{escape_md(str(tax['version']))}**")
if tax.get("description"):
    st.markdown(escape_md(" ".join(tax["description"].split())))

for tab, axis in zip(st.tabs([a.capitalize() for a in AXES]), AXES, strict=True):
    with tab:
        axis_def = tax["axes"][axis]
        st.caption(escape_md(" ".join((axis_def.get("description") or "").split())) + f" Fallback: `{axis_def['fallback']}`.")
        st.dataframe(label_table(tax, axis), hide_index=True, column_config={"description": st.column_config.TextColumn(width="large")})

st.header("Versions and their diff")
options = candidates(f"{tax['name']}@{tax['version']}")
choice = st.selectbox("Compare the taxonomy in force with", ["(choose)", *options, "upload a YAML"], key="tax_other")
other: dict[str, Any] | None = None
if choice == "upload a YAML":
    upload = st.file_uploader("Taxonomy YAML", type=["yaml", "yml"], key="tax_upload")
    if upload is not None:
        other = parse_yaml(upload.name, upload.getvalue())
elif choice in options:
    kind, ref = options[choice]
    if kind == "file":
        try:
            other = parse_yaml(ref.name, ref.read_bytes())
        except OSError as exc:
            st.error(f"Cannot read {code_span(str(ref))}: {escape_md(exc.strerror or str(exc))}", icon=":material/label:")
    else:
        try:
            other = client().taxonomy_version(ref)
        except ApiNotFound:
            st.warning(f"The API has no stored content for {code_span(ref)} (an older API, or the version was removed).", icon=":material/label:")
        except ApiError as err:
            show_error(err)

if other is not None:
    other_ref = f"**{escape_md(other['name'])}@{escape_md(str(other['version']))}**"
    if is_next_version(other, tax):  # a candidate that migrates from the one in force: read forwards, as it would apply
        changes = diff(tax, other)
        st.caption(f"From the taxonomy in force to {other_ref}, its next version:")
    else:
        changes = diff(other, tax)
        st.caption(f"From {other_ref} to the taxonomy in force:")
    if not changes:
        st.success("No difference in labels, descriptions, routing or fallbacks.")
    else:
        counts = {k: sum(1 for c in changes if c["change"] == k) for k in ("added", "removed", "changed")}
        st.write(f"{counts['added']} labels added, {counts['removed']} removed, {counts['changed']} field changes.")
        st.dataframe(changes, hide_index=True)


st.header("Moving the history to this version")
steps = migration_steps(tax)
if not steps:
    st.caption(
        "The taxonomy in force has no `migration:` section, so there is nothing to move. A new version names the one "
        "it follows and its rename / merge / split / retire steps (README, \"Changing the taxonomy\")."
    )
else:
    st.caption(f"From **{escape_md(tax['name'])}@{escape_md(str(tax['migration']['from_version']))}**:")
    st.dataframe(steps, hide_index=True)
    dry, apply = st.columns(2)

    def follow(job: dict[str, Any]) -> None:
        """Poll a migration job to its end with a progress bar; keep its report for the page."""
        bar = st.progress(0.0, text="Starting...")
        while job["state"] == "running":
            time.sleep(0.5)
            job = client().migration_job(job["id"])
            share = job["done"] / job["total"] if job["total"] else 0.0
            bar.progress(share, text=f"Re-classifying where the new version needs it: {job['done']} of {job['total'] or '?'} tickets")
        bar.empty()
        if job["state"] == "failed":
            st.error(f"The migration job {job['id']} failed: {escape_md(job['error'] or 'no reason given')}", icon=":material/error:")
            return
        # the page shows the latest run: a dry run after a commit replaces it, and a commit uses up its dry run;
        # drawn again, so the buttons and the last job above it are those of now, not of before the run
        st.session_state.pop("tax_dry_run" if job["commit"] else "tax_committed", None)
        st.session_state["tax_committed" if job["commit"] else "tax_dry_run"] = job["report"]
        st.rerun()

    def run_migration(wanted: str) -> None:
        """Start the migration as a background job and follow it: the page shows its progress, and a long history
        never hangs on one HTTP request."""
        try:
            follow(client().start_migration_job(commit=wanted == "commit"))
        except ApiAuthError as err:
            st.warning(f"Moving the history needs an admin key: {escape_md(str(err))}", icon=":material/key:")
        except ApiError as err:
            show_error(err)

    # a job started earlier (another tab, a page left mid-way) is shown, and can be followed to its end
    try:
        latest = next(iter(client().migration_jobs()), None)
    except ApiError:  # no admin key (the buttons say so when pressed) or no API: nothing to show here
        latest = None
    if latest is not None and latest["state"] == "running":
        kind = "commit" if latest["commit"] else "dry run"
        st.info(f"A migration {kind} started by {escape_md(latest['created_by'])} is running: {latest['done']} of "
                f"{latest['total'] or '?'} tickets.", icon=":material/sync:")
        if st.button("Follow it", key="tax_follow_job"):
            with api_errors(stop=False):
                follow(latest)
    elif latest is not None:
        st.caption(f"Last migration job: {'commit' if latest['commit'] else 'dry run'} {latest['previous']} → {latest['target']}, "
                   f"{latest['state']} ({escape_md(latest['created_by'])}).")

    if dry.button("Dry run (writes nothing)", key="tax_migrate_dry"):
        run_migration("dry")
    # the commit is offered once a dry run has shown what it will do
    if apply.button("Commit the migration", key="tax_migrate_commit", disabled="tax_dry_run" not in st.session_state,
                    help="Writes one revision per changed ticket; run the dry run first."):
        run_migration("commit")
    for key, verb in (("tax_committed", "changed"), ("tax_dry_run", "would change")):
        result = st.session_state.get(key)
        if not result:
            continue
        label = "Committed" if result["committed"] else "Dry run"
        st.subheader(f"{label}: {result['previous']} → {result['target']}")
        st.write(
            f"{result['tickets']} tickets: {result['changed']} {verb} ({result['reasked']} re-asked by the agent, "
            f"{result.get('ruled', 0)} moved by the steps' rules), "
            f"{result['unchanged']} unchanged, {result['already_current']} already on the new version."
        )
        if result["reviewed_tickets"]:
            scores = ", ".join(f"{axis} {acc:.0%}" for axis, acc in result["reviewed_accuracy"].items())
            st.write(f"The agent under the new version agrees with the leads on {result['reviewed_tickets']} reviewed tickets: {scores}.")
        st.dataframe(migration_transitions(result), hide_index=True)
        break
