"""Prefect-free domain logic: rendering, windows, prompts, validation, state transitions."""
