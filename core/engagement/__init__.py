"""Taking engagement back in.

Events in one normalised shape, event files, inbound mail (replies and bounces), webhook
authentication and the ingestion report.
"""
