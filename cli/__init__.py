"""The `campaign-pipeline` command line."""
