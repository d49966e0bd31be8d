"""Named queries: each takes a session, does one thing, and never commits."""
