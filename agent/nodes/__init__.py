"""One module per graph node; each node is `(state, runtime) -> partial state` and testable alone."""
