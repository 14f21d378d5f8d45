"""Approvals (`approval_requests`, spec 05 §4): an agent asks a human before acting; the request is
escalated to its parent, decided once, and auto-denied when nobody decides within ten minutes."""
