"""grok-batch stages as plain functions (prepare, submit, poll, collect, join), providers,
the job spec and the ledger. Prefect @task wrappers live in tasks/prefect_tasks.py."""
