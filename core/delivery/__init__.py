"""Getting a scheduled send out.

Planning sends into windows and mailboxes, the lane's decisions (grouping, outcomes, backoff),
building the message, the transport, signed unsubscribe links and the run report.
"""
