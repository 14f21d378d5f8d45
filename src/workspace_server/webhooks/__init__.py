"""Inbound webhooks from outside systems (spec 06 §3.7: GitHub)."""
