"""Thin Prefect tasks: one unit of work each, wrapping core and db."""
