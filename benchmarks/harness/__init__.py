"""What every benchmark shares: meters, throwaway databases, child processes, servers, output.

Nothing here imports Prefect at import time, so a child that must run without it (the naive
baseline) can use the harness too.
"""
