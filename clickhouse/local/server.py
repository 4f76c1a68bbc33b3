"""Development/CI ClickHouse server without Docker.

Serves the ClickHouse HTTP interface (port 8123 by default) on top of the
ClickHouse engine embedded in the PyPI wheel ``chdb-core`` (ClickHouse 26.9
in-process), persisting databases and tables in a data directory.

This is a DEV/CI server only: one process, one engine session, queries run
one at a time. Production uses a real clickhouse-server.

What it mirrors from clickhouse-server's HTTP handler:

* query text from the ``query`` URL parameter and/or the body (joined by a
  newline), ``INSERT ... FORMAT X`` with the data after it, any input/output
  format (passed through to the engine untouched);
* URL parameters as per-request settings, ``database``, ``default_format``,
  ``param_<name>`` query parameters, read-only GET requests;
* ``decompress=1`` / ``compress=1`` ClickHouse-framed LZ4 bodies, chunked
  request bodies, gzip/deflate Content-Encoding, gzip responses when
  ``enable_http_compression=1``;
* user/password from X-ClickHouse-User/Key headers, URL parameters or Basic auth;
* error bodies ``Code: N. DB::Exception: ...``, HTTP status mapping and the
  ``X-ClickHouse-*`` response headers.
"""

from __future__ import annotations

import argparse
import base64
import errno
import gzip
import hmac
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

LOG = logging.getLogger("clickhouse-local")

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# numbers from errorCodeToName() of the engine.
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_* (TEXT, ESCAPE_SEQUENCE, QUOTED_STRING, DATE,
    # DATETIME, NUMBER, DOMAIN_VALUE_FROM_STRING, IPV4, IPV6, INPUT_ASSERTION_FAILED, UUID),
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE,
    # THERE_IS_NO_COLUMN, TOO_DEEP_AST, TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321),
        400,
    ),
    # UNKNOWN_TABLE, UNKNOWN_FUNCTION, UNKNOWN_IDENTIFIER, UNKNOWN_TYPE, UNKNOWN_STORAGE, UNKNOWN_DATABASE,
    # UNKNOWN_SETTING, UNKNOWN_DIRECTION_OF_SORTING, UNKNOWN_AGGREGATE_FUNCTION, UNKNOWN_FORMAT,
    # UNKNOWN_DATABASE_ENGINE, UNKNOWN_TYPE_OF_QUERY, UNKNOWN_ROLE
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    **dict.fromkeys((209, 76, 439), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}

_CODE_RE = re.compile(r"Code: (\d+)\. DB::Exception: ")


class ClickHouseError(Exception):
    """An error reported to the client in ClickHouse's wire shape."""

    def __init__(self, code: int, name: str, message: str):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException, names: dict[int, str]) -> "ClickHouseError":
        """Parse chdb's exception text, which embeds ClickHouse's own message.

        chdb sometimes nests the same exception several times ("Code: 73. ...
        Code: 73. ...") or prefixes it ("... failed: "); the innermost
        occurrence is the original one, and its message ends at " (NAME)".
        """
        text = str(exc)
        matches = list(_CODE_RE.finditer(text))
        if not matches:
            return cls(1001, "STD_EXCEPTION", text.strip())
        code = int(matches[-1].group(1))
        name = names.get(code, "UNKNOWN_EXCEPTION")
        message = text[matches[-1].end():]
        cut = message.find(f" ({name})")
        if cut >= 0:
            message = message[:cut]
        return cls(code, name, message.strip().removesuffix("."))

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()


# --------------------------------------------------------------------------
# ClickHouse compressed-block framing (decompress=1 / compress=1)
# --------------------------------------------------------------------------

_LZ4 = 0x82
_NONE = 0x02
_HEADER = struct.Struct("<BII")  # method, compressed size (incl. header), uncompressed size
_MAX_BLOCK = 1 << 20
_U64 = (1 << 64) - 1


def _checksum(block: bytes) -> bytes:
    """CityHash128 v1.0.2 as ClickHouse stores it.

    clickhouse_cityhash returns the 128-bit value as ``(first << 64) | second``;
    ClickHouse writes ``first`` then ``second``, each little-endian (checked
    against the .bin files of a MergeTree part written by the engine).
    """
    value = CityHash128(block)
    return struct.pack("<QQ", value >> 64, value & _U64)


def compress_frames(data: bytes) -> bytes:
    """Frame ``data`` as ClickHouse LZ4 compressed blocks of at most 1 MiB."""
    out = []
    for start in range(0, max(len(data), 1), _MAX_BLOCK):
        chunk = data[start:start + _MAX_BLOCK]
        packed = lz4.block.compress(chunk, store_size=False)
        block = _HEADER.pack(_LZ4, _HEADER.size + len(packed), len(chunk)) + packed
        out.append(_checksum(block) + block)
    return b"".join(out)


def decompress_frames(data: bytes) -> bytes:
    """Undo ClickHouse block framing; verifies every block's checksum."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 16 + _HEADER.size:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", "Cannot decompress: truncated compressed block header")
        expected = data[pos:pos + 16]
        method, size, raw_size = _HEADER.unpack_from(data, pos + 16)
        block = data[pos + 16:pos + 16 + size]
        if size < _HEADER.size or len(block) != size:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", "Cannot decompress: truncated compressed block")
        actual = _checksum(block)
        if actual != expected:
            raise ClickHouseError(
                40,
                "CHECKSUM_DOESNT_MATCH",
                f"Checksum doesn't match: corrupted data. Reference: {expected.hex()}. "
                f"Actual: {actual.hex()}. Size of compressed block: {size}",
            )
        out.append(_decompress_block(method, block[_HEADER.size:], raw_size))
        pos += 16 + size
    return b"".join(out)


def _decompress_block(method: int, payload: bytes, raw_size: int) -> bytes:
    if method == _NONE:
        return payload
    if method != _LZ4:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Unknown compression method: {method:#x}")
    try:
        return lz4.block.decompress(payload, uncompressed_size=raw_size)
    except lz4.block.LZ4BlockError as exc:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress LZ4 block: {exc}") from exc


# --------------------------------------------------------------------------
# Statement scanning (just enough SQL lexing to find FORMAT clauses)
# --------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    rb"""(?P<space>\s+)
       | (?P<comment>--[^\n]*|/\*.*?\*/)
       | (?P<quoted>`(?:[^`\\]|\\.)*`|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
       | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
       | (?P<other>.)""",
    re.X | re.S,
)
# Statements that change the session itself (settings, current database).
_SESSION_VERBS = {b"SET", b"USE"}
_READ_ONLY_VERBS = {b"SELECT", b"WITH", b"SHOW", b"DESCRIBE", b"DESC", b"EXISTS", b"EXPLAIN", b"SET", b"USE"}


def _tokens(sql: bytes):
    """Yield (kind, upper-cased text, end offset, paren depth) of significant tokens."""
    depth = 0
    for match in _TOKEN_RE.finditer(sql):
        kind = match.lastgroup
        if kind in ("space", "comment"):
            continue
        text = match.group()
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1
        yield kind, text.upper(), match.end(), depth


def first_verb(sql: bytes) -> bytes:
    """The statement's leading keyword (e.g. b"SELECT"), b"" if none."""
    for kind, text, _end, _depth in _tokens(sql):
        if kind == "word":
            return text
        if text != b"(":
            return b""
    return b""


@dataclass
class InsertWithData:
    """``INSERT INTO t [(cols)] [SETTINGS ...] FORMAT X`` followed by raw data."""

    head: str
    fmt: str
    data: bytes


def split_insert(sql: bytes) -> InsertWithData | None:
    """Split an INSERT whose data follows a FORMAT clause; None for other statements.

    Data starts after the format name, past spaces and tabs and at most one
    newline, as in ClickHouse's ParserInsertQuery. INSERT ... VALUES/SELECT
    are plain SQL and return None.
    """
    if first_verb(sql) != b"INSERT":
        return None
    tokens = _tokens(sql)
    for kind, text, end, depth in tokens:
        if kind != "word" or depth != 0:
            continue
        if text in (b"VALUES", b"SELECT", b"WITH"):
            return None
        if text == b"FORMAT":
            head = sql[:end - len(text)]
            kind, fmt, fmt_end, _ = next(tokens, (None, b"", 0, 0))
            if kind != "word":
                return None
            fmt_name = sql[fmt_end - len(fmt):fmt_end].decode()
            return InsertWithData(head.decode(), fmt_name, sql[_data_start(sql, fmt_end):])
    return None


def _data_start(sql: bytes, pos: int) -> int:
    while pos < len(sql) and sql[pos] in b" \t":
        pos += 1
    if sql.startswith(b"\r\n", pos):
        return pos + 2
    if sql.startswith(b"\n", pos):
        return pos + 1
    return pos


def output_format(sql: bytes) -> str | None:
    """Name in the statement's trailing ``FORMAT X`` clause, if any."""
    found = None
    previous = None
    for kind, text, end, depth in _tokens(sql):
        if kind == "word" and depth == 0 and previous == b"FORMAT":
            found = sql[end - len(text):end].decode()
        previous = text if kind == "word" else None
    return found


# --------------------------------------------------------------------------
# Engine: one chdb session, serialized, with per-request state restored
# --------------------------------------------------------------------------

_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class QueryRequest:
    sql: bytes
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    default_format: str = "TabSeparated"


@dataclass
class QueryResult:
    body: bytes
    fmt: str
    summary: dict[str, int]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """The chdb session shared by all requests.

    chdb executes the queries of one session one at a time anyway (measured:
    four threads of sleep(0.01) queries take the sum of their times), and
    per-request settings/database are applied to the shared session with SET
    and USE, so every request runs under one lock and the session is put back
    to its startup state afterwards: an HTTP request without session_id is a
    fresh session in ClickHouse, so nothing (URL settings, SET or USE inside
    the query) may leak into the next request.
    """

    def __init__(self, data_dir: str):
        import chdb.session  # imported late: loading the engine is slow

        os.makedirs(data_dir, exist_ok=True)
        self._upload_dir = os.path.join(data_dir, "user_files", "http_inserts")
        os.makedirs(self._upload_dir, exist_ok=True)
        self._session = chdb.session.Session(data_dir)
        self._lock = threading.Lock()
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.error_names = self._error_names()
        self._session.query("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in _FORCED_SETTINGS.items()))
        self._baseline = self._state()

    def _scalar(self, sql: str) -> str:
        return self._rows(sql)[0][0]

    def _rows(self, sql: str) -> list[list]:
        """Rows of an internal query (JSON: setting values may contain tabs and newlines)."""
        body = self._session.query(sql, "JSONCompactEachRow").bytes() or b""
        return [json.loads(line) for line in body.splitlines()]

    def _error_names(self) -> dict[int, str]:
        rows = self._rows("SELECT number, errorCodeToName(number) AS name FROM numbers(10000) WHERE name != ''")
        return {int(code): name for code, name in rows}

    def _state(self) -> dict[str, str]:
        """Every setting's value, plus the current database under the key ''."""
        rows = self._rows(
            "SELECT name, value FROM system.settings WHERE name != 'database' "
            "UNION ALL SELECT '', currentDatabase()"
        )
        return dict(rows)

    def execute(self, request: QueryRequest) -> QueryResult:
        """Run one statement with the request's database/settings, then restore."""
        with self._lock:
            try:
                self._apply(request)
                return self._run(request)
            except ClickHouseError:
                raise
            except Exception as exc:  # chdb raises RuntimeError subclasses with ClickHouse's text
                raise ClickHouseError.from_engine(exc, self.error_names) from exc
            finally:
                self._restore(request)

    def _apply(self, request: QueryRequest) -> None:
        if request.database:
            self._session.query(f"USE {_ident(request.database)}")
        for name in request.settings:
            if not _SETTING_NAME_RE.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        if request.settings:
            self._session.query("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in request.settings.items()))

    def _run(self, request: QueryRequest) -> QueryResult:
        start = time.monotonic_ns()
        insert = split_insert(request.sql)
        if insert is not None:
            result = self._insert(insert)
            fmt = request.default_format
        else:
            sql = self._decode(request.sql)
            result = self._session.query(sql, request.default_format, params=request.params)
            fmt = output_format(request.sql) or request.default_format
        body = result.bytes() or b""
        summary = {
            "read_rows": result.rows_read(),
            "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
            "total_rows_to_read": result.rows_read(),
            "result_bytes": len(body),
            "elapsed_ns": time.monotonic_ns() - start,
        }
        return QueryResult(body, fmt, summary)

    def _insert(self, insert: InsertWithData):
        """INSERT the data through the file() table function.

        The data is written to a file under user_files and read back with
        ``INSERT <head> SELECT * FROM file(path, Format)``: the columns and
        types come from the insertion table (and its column list, Nested
        ``a.b`` columns included) via use_structure_from_insertion_table_in_table_functions.
        chdb's streaming ``send_insert`` is not used: it reports success and
        silently drops rows that fail in the table sink (CHECK constraints,
        Nested arrays of different sizes), where file() raises the error.
        """
        path = os.path.join(self._upload_dir, f"{uuid.uuid4().hex}.data")
        with open(path, "wb") as data_file:
            data_file.write(insert.data)
        try:
            return self._session.query(
                f"{insert.head} SELECT * FROM file({_quote(path)}, {_quote(insert.fmt)})", "TabSeparated"
            )
        finally:
            os.unlink(path)

    @staticmethod
    def _decode(sql: bytes) -> str:
        try:
            return sql.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClickHouseError(62, "SYNTAX_ERROR", f"Syntax error: query is not valid UTF-8 at position {exc.start}") from exc

    def _restore(self, request: QueryRequest) -> None:
        """Put the session back to its startup database and setting values.

        The URL settings and database are reset without looking. Only a SET or
        USE statement can change anything else, and only then is system.settings
        scanned for what it changed (the scan costs ~10 ms, more than most
        queries). The URL settings are reset before that scan: one of them
        (limit, max_result_rows, ...) could otherwise truncate it. Values are
        restored explicitly (not with SET x = DEFAULT) because the baseline
        itself differs from the engine defaults (_FORCED_SETTINGS).
        """
        known = [name for name in request.settings if name in self._baseline]
        if known:
            self._session.query("SET " + ", ".join(f"{name} = {_quote(self._baseline[name])}" for name in known))
        if first_verb(request.sql) not in _SESSION_VERBS:
            if request.database:
                self._session.query(f"USE {_ident(self._baseline[''])}")
            return
        state = self._state()
        if state.pop("") != self._baseline[""]:
            self._session.query(f"USE {_ident(self._baseline[''])}")
        resets = [f"{name} = {_quote(self._baseline[name])}" for name, value in state.items()
                  if name in self._baseline and value != self._baseline[name]]
        if resets:
            self._session.query("SET " + ", ".join(resets))

    def close(self) -> None:
        with self._lock:
            self._session.close()


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

# URL parameters that belong to the HTTP interface, not to query settings.
_HTTP_ONLY_PARAMS = {
    "query", "database", "default_format", "user", "password", "quota_key", "compress", "decompress",
    "query_id", "session_id", "session_timeout", "session_check", "buffer_size", "wait_end_of_query",
    "enable_http_compression", "readonly", "stacktrace", "role",
}
# Inserts are always synchronous here; see _settings_from_params.
# ClickHouse 26.2+ defaults async_insert to 1 (so do chdb and a real server).
_FORCED_SETTINGS = {"async_insert": "0"}

_AUTH_FAILED = (
    "{user}: Authentication failed: password is incorrect, or there is no user with such name"
)


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


def _settings_from_params(params: dict[str, str]) -> dict[str, str]:
    """URL parameters that are query settings.

    ``async_insert`` is overridden to 0 (and is 0 in the session baseline,
    although ClickHouse 26.2+ defaults it to 1): clients such as rotel send
    async_insert=1 and then expect the rows to be queryable promptly; a
    synchronous insert makes them visible when the INSERT returns, whatever
    wait_for_async_insert says, with no background flush to wait for.
    ``http_*`` parameters configure the HTTP layer and ``param_*`` are query
    parameters, so neither is a setting. ``readonly`` is enforced by the
    handler instead: once set on the shared session it could not be unset.
    """
    settings = {
        name: value
        for name, value in params.items()
        if name not in _HTTP_ONLY_PARAMS and not name.startswith(("http_", "param_"))
    }
    settings.update((name, value) for name, value in _FORCED_SETTINGS.items() if name in settings)
    return settings


class Handler(BaseHTTPRequestHandler):
    """One ClickHouse HTTP request per call; connections are kept alive."""

    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-dev"
    timeout = 10  # idle keep-alive connections close after this (clickhouse-server: keep_alive_timeout)

    server: "Server"

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        LOG.debug("http " + format, *args)

    def handle_one_request(self):
        self.server.set_idle(self, True)
        if self.server.stopping:
            self.close_connection = True
            return
        super().handle_one_request()

    def parse_request(self):
        self.server.set_idle(self, False)
        return super().parse_request()

    def do_GET(self):
        self._handle(read_only=True)

    def do_POST(self):
        self._handle(read_only=False)

    def do_HEAD(self):
        self._handle(read_only=True)

    def _handle(self, read_only: bool) -> None:
        """Answer one request and log it; errors become ClickHouse error responses."""
        started = time.monotonic()
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        log = {"sql": ""}
        try:
            status = self._dispatch(url.path, params, read_only, query_id, log)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
            return
        except Exception as exc:  # a bug or a malformed request: answer instead of dropping the connection
            LOG.exception("internal error")
            self.close_connection = True  # the request body may not have been consumed
            status = self._send_error(ClickHouseError(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)
        LOG.info(
            "request method=%s path=%s status=%d duration_ms=%.1f query_id=%s query=%s",
            self.command, url.path, status, (time.monotonic() - started) * 1000, query_id, json.dumps(log["sql"][:200]),
        )

    def _dispatch(self, path: str, params: dict[str, str], read_only: bool, query_id: str, log: dict) -> int:
        try:
            body = self._read_body()
            if path == "/ping" or (path == "/" and not params.get("query") and not body and read_only):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return 200
            if path != "/":
                message = f"There is no handle {path}\n\nUse / or /ping for health checks.\n"
                self._send(404, message.encode(), {"Content-Type": "text/plain; charset=UTF-8"})
                return 404
            user = self._authenticate(params)
            request = self._query_request(params, body)
            log["sql"] = _log_text(request.sql)
            if read_only or params.get("readonly", "0") not in ("", "0"):
                _check_read_only(request.sql, user)
            result = self.server.engine.execute(request)
            self._send_result(result, params, query_id)
            return 200
        except ClickHouseError as exc:
            LOG.warning("error code=%d name=%s message=%s", exc.code, exc.name, json.dumps(exc.message[:500]))
            return self._send_error(exc, query_id)

    def _send_error(self, exc: ClickHouseError, query_id: str) -> int:
        self._send(exc.http_status, exc.body(self.server.engine_version), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(exc.code),
            "X-ClickHouse-Query-Id": query_id,
        })
        return exc.http_status

    def _read_body(self) -> bytes:
        """Read the whole request body, de-chunked and Content-Encoding-decoded."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return _decode_content(body, self.headers.get("Content-Encoding", ""))

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)  # CRLF after the chunk data
        while self.rfile.readline(65537).strip():  # trailer fields, up to the blank line
            pass
        return b"".join(parts)

    def _authenticate(self, params: dict[str, str]) -> str:
        """The request's user name, if its credentials match the configured ones."""
        user, password = _credentials(self.headers, params)
        ok_user = hmac.compare_digest(user.encode(), self.server.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.server.password.encode())
        if not (ok_user and ok_password):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", _AUTH_FAILED.format(user=user))
        return user

    @staticmethod
    def _query_request(params: dict[str, str], body: bytes) -> QueryRequest:
        if params.get("decompress", "0") not in ("", "0"):
            body = decompress_frames(body)
        text = params.get("query", "").encode()
        sql = text + b"\n" + body if text and body else text or body
        if not sql.strip():
            raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
        return QueryRequest(
            sql=sql,
            settings=_settings_from_params(params),
            params={name[len("param_"):]: value for name, value in params.items() if name.startswith("param_")},
            database=params.get("database") or None,
            default_format=params.get("default_format") or "TabSeparated",
        )

    def _send_result(self, result: QueryResult, params: dict[str, str], query_id: str) -> None:
        body = result.body
        headers = {
            "Content-Type": content_type(result.fmt),
            "X-ClickHouse-Format": result.fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in result.summary.items()}, separators=(",", ":")),
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Timezone": self.server.timezone,
        }
        if params.get("compress", "0") not in ("", "0"):
            body = compress_frames(body)
        if params.get("enable_http_compression", "0") not in ("", "0"):
            body = _encode_response(body, self.headers.get("Accept-Encoding", ""), headers)
        self._send(200, body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
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


def _check_read_only(sql: bytes, user: str) -> None:
    """GET requests (and readonly=1) may only read, as in clickhouse-server."""
    if split_insert(sql) is not None or first_verb(sql) not in _READ_ONLY_VERBS:
        raise ClickHouseError(164, "READONLY", f"{user}: Cannot execute query in readonly mode")


def _decode_content(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress {encoding} request body: {exc}") from exc
    raise ClickHouseError(1, "UNSUPPORTED_METHOD", f"Unsupported Content-Encoding: {encoding} (supported: gzip, deflate)")


def _encode_response(body: bytes, accept_encoding: str, headers: dict[str, str]) -> bytes:
    """gzip/deflate the response when enable_http_compression=1 asks for it."""
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        headers["Content-Encoding"] = "gzip"
        return gzip.compress(body)
    if "deflate" in accepted:
        headers["Content-Encoding"] = "deflate"
        return zlib.compress(body)
    return body


def _log_text(sql: bytes) -> str:
    """The statement without INSERT data, for logs."""
    insert = split_insert(sql)
    if insert is not None:
        return f"{insert.head.strip()} FORMAT {insert.fmt}"
    return sql.decode("utf-8", "replace").strip()


class Server(ThreadingHTTPServer):
    """Threaded HTTP server that can drain its keep-alive connections on shutdown."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address, user: str, password: str):
        super().__init__(address, Handler)
        self.user = user
        self.password = password
        self.engine: Engine | None = None
        self.engine_version = ""
        self.timezone = ""
        self.display_name = socket.gethostname()
        self.stopping = False
        self._idle: dict[Handler, bool] = {}
        self._idle_lock = threading.Lock()

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        self.engine_version = engine.version
        self.timezone = engine.timezone

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


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


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
    parser.add_argument("--password", default=env.get("LEADLAB_CH_PASSWORD", ""), help="accepted password (LEADLAB_CH_PASSWORD)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s %(message)s",
    )
    try:
        server = Server((args.host, args.port), args.user, args.password)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: port {args.port} on {args.host} is already in use", file=sys.stderr)
        else:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    engine = Engine(os.path.abspath(args.data_dir))
    server.attach(engine)

    def on_signal(signum, _frame):
        LOG.info("shutdown signal=%s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    LOG.info(
        "listening host=%s port=%d data_dir=%s version=%s pid=%d",
        args.host, server.server_address[1], os.path.abspath(args.data_dir), engine.version, os.getpid(),
    )
    server.serve_forever()
    server.server_close()  # joins in-flight request threads
    engine.close()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
