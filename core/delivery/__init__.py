"""Getting a scheduled send out.

Planning sends into windows and mailboxes (plan), a lane's decisions: grouping, each send's
message, what a verdict or a refused handover makes of a send (lane), building the message
(message, headers), the transport, signed unsubscribe links, the run's config and its report.
"""
