"""Sending mailboxes as accounts: the mailbox file, password references and the warm-up cap."""
