"""What a reply says, and what the pipeline does about it.

The new text of a reply (quoted thread and signature stripped), its intent (the LLM's
structured answer, or rules without a key), and the action each intent takes: stop, reschedule
the follow-up, enrol a referred colleague, or unsubscribe.
"""
