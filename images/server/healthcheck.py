#!/usr/bin/python3
"""The image's HEALTHCHECK: GET /health on the server's own port; exit 0 when it answers 200.

/health answers without credentials and without touching the database (observability/routes.py), so a
slow database does not get a healthy server restarted. The address follows HOST/PORT as the server reads
them: a wildcard bind is reached on loopback.
"""

import os
import sys
import urllib.request

host = os.environ.get("HOST", "0.0.0.0").strip()
if host in ("", "0.0.0.0", "::", "[::]", "localhost"):
    host = "127.0.0.1"
elif ":" in host and not host.startswith("["):
    host = f"[{host}]"
port = os.environ.get("PORT", "").strip() or "8080"
# no proxy: an HTTP_PROXY set for the server's own outbound calls must not carry its health check away
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(f"http://{host}:{port}/health", timeout=4) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError as exc:
    print(f"health check failed: {exc}", file=sys.stderr)
    sys.exit(1)
