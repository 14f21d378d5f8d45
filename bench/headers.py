"""Huge request heads against a real server: how much memory do they cost it? (issue 11 §3)

    .venv/bin/python bench/headers.py                       # 20 clients × 16 MiB headers
    .venv/bin/python bench/headers.py --clients 20 --mib 16 --max-header-bytes 65536

1. Starts `python -m workspace_server serve` on a free loopback port (SQLite in a temp dir, no backend).
2. Reads its RSS (psutil) once it answers /health: the baseline.
3. `--clients` threads each open a connection and send a GET whose one header is `--mib` MiB long, as
   fast as the socket takes it, then read the answer. The server's RSS is sampled every 10 ms meanwhile.
4. Floor: the same RSS after 20 small requests (what serving costs at all).
5. Prints `RESULT headers clients=<n> mib=<n> rss_growth_mb=<peak - baseline> status=<answers seen>`.
   Before serving.py (httptools buffering whole header values) 10 × 16 MiB grew the RSS by ~120 MB; the
   target is < 50 MB.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: Path, port: int, max_header_bytes: int | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "REDIS_URL", "MOLECULE_ENV")}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir}/bench.db",
        DATA_DIR=str(workdir / "data"),
        HOST="127.0.0.1",
        PORT=str(port),
        WORKSPACE_BACKEND="none",
        RATE_LIMIT="100000000",
        PYTHONPATH=str(ROOT / "src"),
    )
    if max_header_bytes is not None:
        env["MAX_HEADER_BYTES"] = str(max_header_bytes)
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "workspace_server", "serve"],
        cwd=str(workdir),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited during start (see server.log)")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become healthy")


def big_header(port: int, mib: int, statuses: collections.Counter[str], lock: threading.Lock) -> None:
    chunk = b"a" * (1 << 20)
    status = "closed"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                for _ in range(mib):
                    sock.sendall(chunk)
                sock.sendall(b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                head = sock.recv(64)
                if head.startswith(b"HTTP/1.1 "):
                    status = head.split(b" ", 2)[1].decode()
            except (ConnectionResetError, TimeoutError):
                pass
    finally:
        with lock:
            statuses[status] += 1


def sample_peak(proc: psutil.Process, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--max-header-bytes", type=int, default=None, help="MAX_HEADER_BYTES (server default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-headers-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        proc = start_server(workdir, port, args.max_header_bytes)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            server = psutil.Process(proc.pid)
            with httpx.Client(base_url=url) as client:
                for _ in range(20):
                    client.get("/health")
            time.sleep(0.5)
            baseline = server.memory_info().rss
            peak = [baseline]
            stop = threading.Event()
            sampler = threading.Thread(target=sample_peak, args=(server, stop, peak))
            sampler.start()
            statuses: collections.Counter[str] = collections.Counter()
            lock = threading.Lock()
            started = time.monotonic()
            clients = [
                threading.Thread(target=big_header, args=(port, args.mib, statuses, lock))
                for _ in range(args.clients)
            ]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            time.sleep(0.2)
            stop.set()
            sampler.join()
            took = time.monotonic() - started
            still_ok = httpx.get(url + "/health", timeout=5).status_code
            growth = (peak[0] - baseline) / 1e6
            answers = ",".join(f"{k}x{v}" for k, v in sorted(statuses.items()))
            print(f"baseline_rss_mb={baseline / 1e6:.1f} peak_rss_mb={peak[0] / 1e6:.1f} seconds={took:.2f}")
            print(f"health after: {still_ok}")
            print(
                f"RESULT headers clients={args.clients} mib={args.mib} rss_growth_mb={growth:.1f} "
                f"status={answers}"
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
