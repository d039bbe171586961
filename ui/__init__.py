"""The support lead's review UI (Streamlit): it only talks to the triage API over HTTP (`ui/api_client.py`)."""
