"""Doors: what a driver (CLI, flow, notebook) calls: drive a run, the collector pass,
inbox admission, status and cancel."""
