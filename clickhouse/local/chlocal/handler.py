"""The HTTP interface: one ClickHouse request per call, keep-alive connections.

Order of checks (each refusal answers in ClickHouse's error shape before the next
step): path; Host and Origin (a web page in a browser may not reach this server);
credentials; the body's announced size; then the body is read (cap on the wire
size), decoded (cap on the decoded size), and the query is checked: length, refused
features (files, URLs, other servers), readonly.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import external
from .encoding import choose_response_encoding, decode_body, encode_body
from .engine import DEFAULT_SESSION_TIMEOUT, FORCED_SETTINGS, MAX_SESSION_TIMEOUT, Engine, QueryRequest, QueryResult
from .errors import ClickHouseError, access_denied, too_large
from .framing import compress_frames, decompress_frames
from .sql import REFUSED_SETTINGS, check_allowed, check_insert_data, check_readonly, check_setting_change, split_insert

LOG = logging.getLogger("clickhouse-local")

# URL parameters that belong to the HTTP interface, not to query settings.
_HTTP_ONLY_PARAMS = {
    "query", "database", "default_format", "user", "password", "quota_key", "compress", "decompress",
    "query_id", "session_id", "session_timeout", "session_check", "buffer_size", "wait_end_of_query",
    "enable_http_compression", "readonly", "stacktrace", "role", "client_protocol_version",
}
_AUTH_FAILED = "{user}: Authentication failed: password is incorrect, or there is no user with such name"
_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 1 << 20


@dataclass
class Limits:
    max_body_bytes: int = 256 << 20
    max_decompressed_bytes: int = 1 << 30
    max_query_bytes: int = 4 << 20


@dataclass
class Access:
    user: str = "default"
    password: str = ""
    allowed_origins: set[str] = field(default_factory=set)
    allowed_hosts: set[str] = field(default_factory=set)


def content_type(fmt: str) -> str:
    """Content-Type that clickhouse-server's output format reports for ``fmt``."""
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        header = "present" if "withnames" in name else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if name.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if name.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack", "capnproto", "bson", "npy")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "0") not in ("", "0", "false")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-dev"
    timeout = 10  # idle keep-alive connections close after this (clickhouse-server: keep_alive_timeout)

    server: "Server"

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        LOG.debug("http " + format, *args)

    def handle_one_request(self):
        self.server.set_idle(self, True)
        self._body_pending = False
        if self.server.stopping:
            self.close_connection = True
            return
        super().handle_one_request()

    def parse_request(self):
        self.server.set_idle(self, False)
        return super().parse_request()

    def handle_expect_100(self):
        """Answer ``Expect: 100-continue`` only once the credentials and size are accepted."""
        return True

    def finish(self):
        """After refusing a request whose body was not read, drain a little of it before closing,
        so the client reads the refusal instead of a connection reset."""
        try:
            super().finish()
        finally:
            if getattr(self, "_body_pending", False):
                self._drain()

    def _drain(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _DRAIN_SECONDS
            drained = 0
            while drained < _DRAIN_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def do_GET(self):
        self._handle(get=True)

    def do_POST(self):
        self._handle(get=False)

    def do_HEAD(self):
        self._handle(get=True)

    def _handle(self, get: bool) -> None:
        """Answer one request and log it; errors become ClickHouse error responses."""
        started = time.monotonic()
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        self._body_pending = self._has_body()
        log = {"sql": "", "user": ""}
        try:
            status = self._dispatch(url.path, params, get, query_id, log)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
            return
        except Exception as exc:  # a bug or a malformed request: answer instead of dropping the connection
            LOG.exception("internal error")
            self.close_connection = True  # the request body may not have been consumed
            status = self._send_error(ClickHouseError(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)
        LOG.info(
            "request method=%s path=%s status=%d duration_ms=%.1f user=%s content_encoding=%s query_id=%s query=%s",
            self.command, url.path, status, (time.monotonic() - started) * 1000, log["user"],
            self.headers.get("Content-Encoding", "-") or "-", query_id, json.dumps(log["sql"][:200]),
        )

    def _has_body(self) -> bool:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return True
        try:
            return int(self.headers.get("Content-Length") or 0) > 0
        except ValueError:
            return True

    def _dispatch(self, path: str, params: dict[str, str], get: bool, query_id: str, log: dict) -> int:
        try:
            if path == "/ping" or (path == "/" and get and "query" not in params and not self._body_pending):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return 200
            if path != "/":
                message = f"There is no handle {path}\n\nUse / or /ping for health checks.\n"
                self._send(404, message.encode(), {"Content-Type": "text/plain; charset=UTF-8"})
                return 404
            self._check_browser()
            user = self._authenticate(params)
            log["user"] = user
            body = self._read_body()
            request, session = self._query_request(params, body, query_id)
            log["sql"] = _log_text(request.sql)
            self._check_request(request, params, get, user)
            result = self.server.engine.execute(request, user, **session)
            self._send_result(result, params, query_id)
            return 200
        except ClickHouseError as exc:
            LOG.warning("error code=%d name=%s message=%s", exc.code, exc.name, json.dumps(exc.message[:500]))
            return self._send_error(exc, query_id)

    # --- checks before the body --------------------------------------------

    def _check_browser(self) -> None:
        """Refuse web pages: a foreign Origin, a cross-site fetch, or a Host name that is not ours.

        A browser sends ``Origin`` with every cross-origin POST and ``Sec-Fetch-Site``
        with every request; a DNS-rebinding page reaches us under its own host name.
        """
        host = self.headers.get("Host", "")
        if host and not self.server.host_allowed(host):
            raise access_denied(
                f"Host '{host}' is not a name of this server; refused (a web page may be trying to reach it). "
                "Allow it with --allowed-hosts (LEADLAB_CH_ALLOWED_HOSTS)"
            )
        origin = self.headers.get("Origin")
        if origin is not None:
            if origin not in self.server.access.allowed_origins and urlsplit(origin).netloc.lower() != host.lower():
                raise access_denied(
                    f"Requests from web pages of another origin ({origin}) are refused. "
                    "Allow one with --allowed-origins (LEADLAB_CH_ALLOWED_ORIGINS)"
                )
        elif self.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
            raise access_denied("Requests from web pages of another site are refused (Sec-Fetch-Site)")

    def _authenticate(self, params: dict[str, str]) -> str:
        """The request's user name, if its credentials match the configured ones."""
        user, password = _credentials(self.headers, params)
        access = self.server.access
        ok_user = hmac.compare_digest(user.encode(), access.user.encode())
        ok_password = hmac.compare_digest(password.encode(), access.password.encode())
        if not (ok_user and ok_password):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", _AUTH_FAILED.format(user=user))
        return user

    def _read_body(self) -> bytes:
        """The whole request body, de-chunked (not yet Content-Encoding-decoded), within the cap."""
        limit = self.server.limits.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._continue()
            body = self._read_chunked(limit)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ClickHouseError(36, "BAD_ARGUMENTS", "Invalid Content-Length header") from None
            if length > limit:
                raise too_large(f"Request body of {length} bytes exceeds the limit of {limit} bytes (--max-body-bytes)")
            if length:
                self._continue()
            body = self.rfile.read(length)
            if len(body) != length:
                raise ConnectionError("connection closed inside the request body")
        self._body_pending = False
        return body

    def _continue(self) -> None:
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()

    def _read_chunked(self, limit: int) -> bytes:
        parts = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise ClickHouseError(36, "BAD_ARGUMENTS", "Invalid chunk size in a chunked request body") from None
            if size == 0:
                break
            total += size
            if total > limit:
                raise too_large(f"Request body exceeds the limit of {limit} bytes (--max-body-bytes)")
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)  # CRLF after the chunk data
        while self.rfile.readline(65537).strip():  # trailer fields, up to the blank line
            pass
        return b"".join(parts)

    # --- the query -----------------------------------------------------------

    def _query_request(self, params: dict[str, str], body: bytes, query_id: str) -> tuple[QueryRequest, dict]:
        limits = self.server.limits
        body = decode_body(body, self.headers.get("Content-Encoding", ""), limits.max_decompressed_bytes)
        if _flag(params, "decompress"):
            body = decompress_frames(body, limits.max_decompressed_bytes)
        tables = []
        content = self.headers.get("Content-Type", "")
        if external.is_multipart(content):
            tables = external.external_tables(content, body, params)
            body = b""
        text = params.get("query", "").encode()
        sql = text + b"\n" + body if text and body else text or body
        if not sql.strip():
            raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
        if len(sql) > limits.max_query_bytes and split_insert(sql[:limits.max_query_bytes]) is None:
            raise ClickHouseError(
                62, "SYNTAX_ERROR",
                f"Max query size exceeded: the query is {len(sql)} bytes, the limit is {limits.max_query_bytes} "
                "(--max-query-bytes; INSERT data after FORMAT does not count)",
            )
        skip = _HTTP_ONLY_PARAMS | external.external_params(tables)
        settings = {
            name: value for name, value in params.items()
            if name not in skip and not name.startswith(("http_", "param_"))
        }
        settings.update((name, value) for name, value in FORCED_SETTINGS.items() if name in settings)
        request = QueryRequest(
            sql=sql,
            settings=settings,
            params={name[len("param_"):]: value for name, value in params.items() if name.startswith("param_")},
            database=self.headers.get("X-ClickHouse-Database") or params.get("database") or None,
            default_format=self.headers.get("X-ClickHouse-Format") or params.get("default_format") or "TabSeparated",
            query_id=query_id,
            external=tables,
        )
        return request, _session_args(params)

    def _check_request(self, request: QueryRequest, params: dict[str, str], get: bool, user: str) -> None:
        if params.get("role"):
            raise ClickHouseError(511, "UNKNOWN_ROLE", f"There is no role `{params['role']}` (this dev server has no roles)")
        insert = split_insert(request.sql)
        check_allowed(insert.head if insert is not None else request.sql)
        if insert is not None:
            check_insert_data(insert.fmt, insert.data)
        for table in request.external:
            check_insert_data(table.fmt, table.data)
        for name in request.settings:
            if name.lower() in REFUSED_SETTINGS:
                raise access_denied(f"Setting {name} is not allowed over HTTP on this dev server (it names files or changes the SQL dialect)")
        level = _readonly_level(params, get)
        if level:
            check_readonly(request.sql, level, user)
            for name in request.settings:
                check_setting_change(name, level)

    # --- responses -----------------------------------------------------------

    def _send_error(self, exc: ClickHouseError, query_id: str) -> int:
        self._send(exc.http_status, exc.body(self.server.engine.version), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(exc.code),
            "X-ClickHouse-Query-Id": query_id,
        })
        return exc.http_status

    def _send_result(self, result: QueryResult, params: dict[str, str], query_id: str) -> None:
        body = result.body
        summary = json.dumps({k: str(v) for k, v in result.summary.items()}, separators=(",", ":"))
        headers = {
            "Content-Type": content_type(result.fmt),
            "X-ClickHouse-Format": result.fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": summary,
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
        }
        if _flag(params, "send_progress_in_http_headers"):
            headers["X-ClickHouse-Progress"] = summary  # buffered: the one progress header is the final one
        if _flag(params, "compress"):
            body = compress_frames(body)
        if _flag(params, "enable_http_compression"):
            encoding = choose_response_encoding(self.headers.get("Accept-Encoding", ""))
            if encoding:
                body = encode_body(body, encoding)
                headers["Content-Encoding"] = encoding
        self._send(200, body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self._body_pending:
            self.close_connection = True  # the unread body ends the connection
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.server.stopping or self.close_connection:
            self.close_connection = True
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", f"timeout={self.timeout}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _readonly_level(params: dict[str, str], get: bool) -> int:
    value = params.get("readonly", "0") or "0"
    if value not in ("0", "1", "2"):
        raise ClickHouseError(36, "BAD_ARGUMENTS", f"Invalid readonly value '{value}' (0, 1 or 2)")
    level = int(value)
    if get and level == 0:
        return 2  # clickhouse-server: a GET request is readonly=2
    return level


def _session_args(params: dict[str, str]) -> dict:
    session_id = params.get("session_id") or None
    if session_id is None:
        return {}
    raw = params.get("session_timeout") or str(DEFAULT_SESSION_TIMEOUT)
    try:
        timeout = int(raw)
    except ValueError:
        raise ClickHouseError(374, "INVALID_SESSION_TIMEOUT", f"Invalid session timeout: '{raw}'") from None
    if timeout > MAX_SESSION_TIMEOUT or timeout < 0:
        raise ClickHouseError(
            374, "INVALID_SESSION_TIMEOUT",
            f"Session timeout '{timeout}' is larger than max_session_timeout: {MAX_SESSION_TIMEOUT}",
        )
    return {"session_id": session_id, "session_timeout": timeout, "session_check": _flag(params, "session_check")}


def _credentials(headers, params: dict[str, str]) -> tuple[str, str]:
    """User and password from (in ClickHouse's order) headers, Basic auth, URL."""
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        return headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key", "")
    authorization = headers.get("Authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", "Invalid Basic authorization header") from exc
        return user or "default", password
    return params.get("user") or "default", params.get("password", "")


def _log_text(sql: bytes) -> str:
    """The statement without INSERT data, for logs."""
    insert = split_insert(sql)
    if insert is not None:
        return f"{insert.head.decode('utf-8', 'replace').strip()} FORMAT {insert.fmt}"
    return sql[:1000].decode("utf-8", "replace").strip()


class Server(ThreadingHTTPServer):
    """Threaded HTTP server that can drain its keep-alive connections on shutdown."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address, access: Access, limits: Limits):
        super().__init__(address, Handler)
        self.access = access
        self.limits = limits
        self.engine: Engine | None = None
        self.display_name = socket.gethostname()
        self._own_names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        self.stopping = False
        self._idle: dict[Handler, bool] = {}
        self._idle_lock = threading.Lock()

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    def host_allowed(self, host: str) -> bool:
        """An IP literal, localhost, this machine's names, or a configured name (``*`` allows any)."""
        allowed = self.access.allowed_hosts
        if "*" in allowed:
            return True
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        return name in self._own_names or name.endswith(".localhost") or name in allowed

    def set_idle(self, handler: Handler, idle: bool) -> None:
        with self._idle_lock:
            self._idle[handler] = idle

    def shutdown_request(self, request):
        with self._idle_lock:
            for handler in [h for h in self._idle if h.connection is request]:
                del self._idle[handler]
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, close idle keep-alive connections, let busy ones finish."""
        self.stopping = True
        self.shutdown()
        with self._idle_lock:
            idle = [handler for handler, is_idle in self._idle.items() if is_idle]
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
