"""Development/CI ClickHouse server without Docker.

Serves the ClickHouse HTTP interface (port 8123 by default) on top of the
ClickHouse engine embedded in the PyPI wheel ``chdb-core`` (ClickHouse 26.9
in-process), persisting databases and tables in a data directory.

This is a DEV/CI server only; production uses a real clickhouse-server. What it
supports, refuses and does differently is listed in docs/local-stack.md; the
parts live in the package ``chlocal`` beside this file.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chlocal.engine import Engine  # noqa: E402
from chlocal.handler import Access, Limits, Server  # noqa: E402

LOG = logging.getLogger("clickhouse-local")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        description=(
            "Development/CI ClickHouse HTTP server backed by the in-process ClickHouse engine of "
            "chdb-core (no Docker). Not for production: use clickhouse-server there."
        ),
    )
    parser.add_argument("--host", default=env.get("LEADLAB_CH_HOST", "127.0.0.1"), help="listen address (LEADLAB_CH_HOST)")
    parser.add_argument("--port", type=int, default=int(env.get("LEADLAB_CH_PORT", "8123")), help="HTTP port (LEADLAB_CH_PORT)")
    parser.add_argument(
        "--data-dir", default=env.get("LEADLAB_CH_DATA_DIR", ".leadlab/clickhouse"), help="data directory (LEADLAB_CH_DATA_DIR)"
    )
    parser.add_argument("--user", default=env.get("LEADLAB_CH_USER", "default"), help="accepted user (LEADLAB_CH_USER)")
    parser.add_argument(
        "--password", default=env.get("LEADLAB_CH_PASSWORD", ""),
        help="accepted password (LEADLAB_CH_PASSWORD; prefer the variable: arguments show in ps). "
        "Required unless --local-only",
    )
    parser.add_argument(
        "--local-only", action="store_true", default=env.get("LEADLAB_CH_LOCAL_ONLY", "") == "1",
        help="allow an empty password; then only a loopback --host is accepted (LEADLAB_CH_LOCAL_ONLY=1)",
    )
    parser.add_argument(
        "--allowed-origins", default=env.get("LEADLAB_CH_ALLOWED_ORIGINS", ""),
        help="comma-separated browser origins allowed to send queries, e.g. http://localhost:3000 "
        "(LEADLAB_CH_ALLOWED_ORIGINS; default none)",
    )
    parser.add_argument(
        "--allowed-hosts", default=env.get("LEADLAB_CH_ALLOWED_HOSTS", ""),
        help="comma-separated Host names accepted besides IP addresses, localhost and this machine's names; "
        "'*' accepts any (LEADLAB_CH_ALLOWED_HOSTS)",
    )
    limits = Limits()
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes, help="request body cap, as sent")
    parser.add_argument(
        "--max-decompressed-bytes", type=int, default=limits.max_decompressed_bytes, help="request body cap, decoded"
    )
    parser.add_argument(
        "--max-query-bytes", type=int, default=limits.max_query_bytes, help="query text cap (INSERT data after FORMAT excluded)"
    )
    parser.add_argument("--max-concurrent-queries", type=int, default=8, help="statements run at once (one slot stays free of writes)")
    parser.add_argument("--max-sessions", type=int, default=64, help="open HTTP sessions (session_id) at once")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s %(message)s",
    )
    if not args.password and not args.local_only:
        print(
            "error: a password is required (LEADLAB_CH_PASSWORD or --password); "
            "for a passwordless server on loopback only, pass --local-only",
            file=sys.stderr,
        )
        return 2
    if args.local_only and not _is_loopback(args.host):
        print(f"error: --local-only listens on a loopback address only, not {args.host}", file=sys.stderr)
        return 2
    access = Access(args.user, args.password, _names(args.allowed_origins), _names(args.allowed_hosts))
    limits = Limits(args.max_body_bytes, args.max_decompressed_bytes, args.max_query_bytes)
    try:
        server = Server((args.host, args.port), access, limits)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: port {args.port} on {args.host} is already in use", file=sys.stderr)
        else:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    engine = Engine(os.path.abspath(args.data_dir), args.max_concurrent_queries, args.max_sessions)
    server.attach(engine)

    def on_signal(signum, _frame):
        LOG.info("shutdown signal=%s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    LOG.info(
        "listening host=%s port=%d data_dir=%s version=%s pid=%d auth=%s",
        args.host, server.server_address[1], os.path.abspath(args.data_dir), engine.version, os.getpid(),
        "password" if args.password else "none (local-only)",
    )
    server.serve_forever()
    server.server_close()  # joins in-flight request threads
    engine.close()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
