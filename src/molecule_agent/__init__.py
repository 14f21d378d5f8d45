"""The reference agent runtime: registers with the platform, heartbeats, and serves A2A JSON-RPC v0.3.

Standard library only (plus PyYAML when a config.yaml is present), so the same code runs as a local
process from the server's virtualenv and inside a minimal offline-built Debian image.
"""

__version__ = "0.1.0"
