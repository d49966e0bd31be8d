"""Writing each due lead's email.

The due lead, the prompt and its cache key, the LLM client, the draft, the quality gate, the
failure policy, step regeneration and their run reports.
"""
