"""How the flows run: what prefect.yaml cannot express.

`spec` reads prefect.yaml (the single source of the six deployments), `serve` serves those
same deployments from one process, `setup` and `limits` prepare the Prefect server (the work
pool, the LLM rate limit), and `pull` is the pull step that puts each run in the checkout.
"""
