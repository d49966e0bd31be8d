"""Campaigns as the web app writes them.

Sending rules, windows and the next step's date, the campaign and leads files, lead fields and
the placeholder templates a campaign's steps are written in.
"""
