"""The product as plain functions, no Prefect needed: the lifecycle (lifecycle.py) and the
runner that carries it out, the stages, the providers, money, the job spec, infrastructure,
and the doors (what the CLI and flows call). Prefect @task wrappers live in flows/stages.py."""
