"""Audit ledger read side (`audit_events`, spec 05 §5): agents append HMAC-chained rows, the server only
lists them and re-verifies the chain so tampering shows up in `chain_valid`."""
