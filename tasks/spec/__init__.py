"""The job spec: fields and validation, prompt templates, answer schemas, provider endpoints."""
