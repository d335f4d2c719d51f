"""The stages of a run: prepare, submit, poll, collect, answer-sync, reconcile, join, report."""
