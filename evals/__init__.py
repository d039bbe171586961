"""Offline evaluation of the triage agent: `triage eval`, `python -m evals.bench`, the CI accuracy gate.

Kept apart from `tests/`: tests say whether the code works, evals say how well the agent labels tickets.
"""
