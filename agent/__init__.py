"""LLM-assisted ticket triage: service, channel and tier labels from a configurable taxonomy."""

__version__ = "0.1.0"
