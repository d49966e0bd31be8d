"""Prefect flows: orchestration only; each file is named after the flow it holds."""
