"""How the flows run: what prefect.yaml cannot express."""
