"""The support lead's review UI: `streamlit run ui/app.py` (TRIAGE_API_URL, TRIAGE_API_KEY say which API, which key)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run ui/app.py` puts ui/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

from ui.common import PAGES, refuse_rebound_host, sidebar  # noqa: E402

st.set_page_config(page_title="Triage review", page_icon=":material/inbox:", layout="wide")
refuse_rebound_host()  # every page's run passes here first: under a rebound name, nothing else runs

navigation = st.navigation(
    {
        "Review": [
            st.Page(PAGES["queue"], title="Review queue", icon=":material/inbox:", default=True),
            st.Page(PAGES["ticket"], title="Ticket", icon=":material/confirmation_number:"),
            st.Page(PAGES["batch"], title="Batch", icon=":material/upload_file:"),
        ],
        "Analyse": [
            st.Page(PAGES["insights"], title="Insights", icon=":material/insights:"),
            st.Page(PAGES["evals"], title="Evals", icon=":material/science:"),
            st.Page(PAGES["taxonomy"], title="Taxonomy", icon=":material/label:"),
        ],
    }
)
sidebar()
navigation.run()
