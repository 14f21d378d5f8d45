"""Plugins (spec 06 §3.1–§3.3): sources that fetch a plugin, the endpoints that install it into a
workspace's `/configs/plugins/<name>` through the workspace backend, and the per-org allowlist."""
