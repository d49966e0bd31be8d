"""The public web endpoint: unsubscribe pages (RFC 8058 one-click and a form) and a health check."""
