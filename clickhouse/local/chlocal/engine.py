"""The engine: chdb sessions on one data directory, run concurrently.

Measured with the pinned chdb-core 26.9.0 (docs/local-stack.md): several
``chdb.session.Session`` objects on one data directory run their queries at the
same time (four ``SELECT sleep(0.3)`` on four sessions take 0.32 s; on one
session 1.22 s), each with its own settings, current database and temporary
tables, and see each other's tables and rows at once. So:

* a sessionless HTTP request takes a chdb session from a pool, applies its URL
  settings and database, runs, and puts the session back to its startup state
  (an HTTP request without session_id is a fresh session in ClickHouse);
* an HTTP session (``session_id``) owns a chdb session of its own, so SET, USE
  and temporary tables persist in it until ``session_timeout`` expires;
* a scheduler bounds how many statements run at once and keeps one slot free of
  writes, so a dashboard's read never waits behind the collector's inserts.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from .errors import ClickHouseError
from .sql import first_verb, output_format, split_insert, tokens

_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Inserts are always synchronous here. ClickHouse 26.2+ defaults async_insert to 1 (so
# do chdb and a real server); clients such as rotel send async_insert=1 and then expect
# the rows to be queryable promptly, which a synchronous insert guarantees.
FORCED_SETTINGS = {"async_insert": "0"}
_READ_VERBS = {b"SELECT", b"WITH", b"SHOW", b"DESCRIBE", b"DESC", b"EXISTS", b"EXPLAIN", b"SET", b"USE"}
DEFAULT_SESSION_TIMEOUT = 60
MAX_SESSION_TIMEOUT = 3600  # clickhouse-server's default max_session_timeout


@dataclass
class ExternalTable:
    """One multipart external-data file: a temporary table for one query."""

    name: str
    structure: str
    fmt: str
    data: bytes


@dataclass
class QueryRequest:
    sql: bytes
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    default_format: str = "TabSeparated"
    query_id: str = ""
    external: list[ExternalTable] = field(default_factory=list)


@dataclass
class QueryResult:
    body: bytes
    fmt: str
    summary: dict[str, int]


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def is_write(sql: bytes) -> bool:
    return first_verb(sql) not in _READ_VERBS or split_insert(sql) is not None


class Scheduler:
    """At most ``limit`` statements at once, at most ``limit - 1`` of them writes.

    Waiters are granted in arrival order, skipping writes while the write slots
    are full, so a read waits for a free slot but never behind queued inserts.
    """

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.write_limit = max(1, self.limit - 1)
        self._cv = threading.Condition()
        self._queue: deque = deque()
        self._running = 0
        self._writes = 0

    def _runnable(self, write: bool) -> bool:
        return self._running < self.limit and (not write or self._writes < self.write_limit)

    def acquire(self, write: bool) -> None:
        with self._cv:
            ticket = object()
            self._queue.append((ticket, write))
            try:
                while True:
                    first = next((t for t, w in self._queue if self._runnable(w)), None)
                    if first is ticket:
                        break
                    self._cv.wait()
            finally:
                self._queue.remove((ticket, write))
            self._running += 1
            self._writes += write

    def release(self, write: bool) -> None:
        with self._cv:
            self._running -= 1
            self._writes -= write
            self._cv.notify_all()


class _ChdbSession:
    """One chdb session and the per-request state handling around it."""

    def __init__(self, engine: "Engine"):
        import chdb.session  # imported late: loading the engine is slow

        self.engine = engine
        self.conn = chdb.session.Session(engine.data_dir)
        self.conn.query("SET " + ", ".join(f"{k} = {quote(v)}" for k, v in FORCED_SETTINGS.items()))

    def rows(self, sql: str) -> list[list]:
        """Rows of an internal query (JSON: setting values may contain tabs and newlines)."""
        body = self.conn.query(sql, "JSONCompactEachRow").bytes() or b""
        return [json.loads(line) for line in body.splitlines()]

    def state(self) -> dict[str, str]:
        """Every setting's value, plus the current database under the key ''."""
        return dict(self.rows(
            "SELECT name, value FROM system.settings WHERE name != 'database' UNION ALL SELECT '', currentDatabase()"
        ))

    def set(self, values: dict[str, str]) -> None:
        if values:
            self.conn.query("SET " + ", ".join(f"{k} = {quote(v)}" for k, v in values.items()))

    def run(self, request: QueryRequest) -> QueryResult:
        start = time.monotonic_ns()
        insert = split_insert(request.sql)
        if insert is not None:
            result = self.insert_data(insert.head.decode("utf-8", "replace"), insert.fmt, insert.data)
            fmt = request.default_format
        else:
            result = self.conn.query(_decode(request.sql), request.default_format, params=request.params)
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

    def insert_data(self, head: str, fmt: str, data: bytes):
        """INSERT the data through the file() table function (an internal statement).

        The data is written to a file under user_files and read back with
        ``INSERT <head> SELECT * FROM file(path, Format)``: the columns and
        types come from the insertion table (and its column list, Nested
        ``a.b`` columns included) via use_structure_from_insertion_table_in_table_functions.
        chdb's streaming ``send_insert`` is not used: it reports success and
        silently drops rows that fail in the table sink (CHECK constraints,
        Nested arrays of different sizes), where file() raises the error.
        """
        path = os.path.join(self.engine.upload_dir, f"{uuid.uuid4().hex}.data")
        with open(path, "wb") as data_file:
            data_file.write(data)
        try:
            return self.conn.query(f"{head} SELECT * FROM file({quote(path)}, {quote(fmt)})", "TabSeparated")
        finally:
            os.unlink(path)

    def close(self) -> None:
        self.conn.close()


def _decode(sql: bytes) -> str:
    try:
        return sql.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClickHouseError(62, "SYNTAX_ERROR", f"Syntax error: query is not valid UTF-8 at position {exc.start}") from exc


def _is_temporary_create(sql: bytes) -> bool:
    for i, token in enumerate(tokens(sql, stop=4096)):
        if token.kind == "word" and token.upper == b"TEMPORARY":
            return True
        if i > 3:
            return False
    return False


@dataclass
class _HttpSession:
    chdb: _ChdbSession
    timeout: int
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class Engine:
    """All chdb sessions of the server, the scheduler and the HTTP sessions."""

    def __init__(self, data_dir: str, max_concurrent: int = 8, max_sessions: int = 64):
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.upload_dir = os.path.join(data_dir, "user_files", "http_inserts")
        os.makedirs(self.upload_dir, exist_ok=True)
        self.scheduler = Scheduler(max_concurrent)
        self.max_sessions = max_sessions
        self._pool: list[_ChdbSession] = []
        self._pool_lock = threading.Lock()
        self._sessions: dict[tuple[str, str], _HttpSession] = {}
        self._sessions_lock = threading.Lock()
        self._running_ids: set[str] = set()
        first = _ChdbSession(self)
        self.version = first.rows("SELECT version()")[0][0]
        self.timezone = first.rows("SELECT timezone()")[0][0]
        rows = first.rows("SELECT number, errorCodeToName(number) AS name FROM numbers(10000) WHERE name != ''")
        self.error_names = {int(code): name for code, name in rows}
        self.baseline = first.state()
        self._pool.append(first)

    # --- pooled sessions ---------------------------------------------------

    def _take(self) -> _ChdbSession:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return _ChdbSession(self)

    def _give_back(self, session: _ChdbSession) -> None:
        with self._pool_lock:
            self._pool.append(session)

    # --- HTTP sessions -----------------------------------------------------

    def _open_session(self, user: str, session_id: str, timeout: int, check: bool) -> _HttpSession:
        now = time.monotonic()
        with self._sessions_lock:
            self._expire(now)
            session = self._sessions.get((user, session_id))
            if session is None:
                if check:
                    raise ClickHouseError(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
                if len(self._sessions) >= self.max_sessions:
                    raise ClickHouseError(
                        202, "TOO_MANY_SIMULTANEOUS_QUERIES",
                        f"Too many HTTP sessions: {len(self._sessions)}, the limit is {self.max_sessions} (--max-sessions)",
                    )
                session = _HttpSession(_ChdbSession(self), timeout, now)
                self._sessions[(user, session_id)] = session
            if not session.lock.acquire(blocking=False):
                raise ClickHouseError(373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client")
            session.timeout = timeout
            session.last_used = now
            return session

    def _expire(self, now: float) -> None:
        for key, session in list(self._sessions.items()):
            if now - session.last_used > session.timeout and not session.lock.locked():
                del self._sessions[key]
                session.chdb.close()

    def session_count(self) -> int:
        with self._sessions_lock:
            self._expire(time.monotonic())
            return len(self._sessions)

    # --- execution ---------------------------------------------------------

    def execute(
        self, request: QueryRequest, user: str = "default", session_id: str | None = None,
        session_timeout: int = DEFAULT_SESSION_TIMEOUT, session_check: bool = False,
    ) -> QueryResult:
        """Run one statement: in its HTTP session if it names one, else on a pooled session."""
        for name in request.settings:
            if not _SETTING_NAME_RE.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        self._claim_query_id(request.query_id)
        write = is_write(request.sql)
        try:
            session = self._open_session(user, session_id, session_timeout, session_check) if session_id else None
            try:
                self.scheduler.acquire(write)
                try:
                    if session is not None:
                        return self._in_session(session.chdb, request)
                    return self._sessionless(request)
                finally:
                    self.scheduler.release(write)
            finally:
                if session is not None:
                    session.last_used = time.monotonic()
                    session.lock.release()
        finally:
            with self._sessions_lock:
                self._running_ids.discard(request.query_id)

    def _claim_query_id(self, query_id: str) -> None:
        with self._sessions_lock:
            if query_id in self._running_ids:
                raise ClickHouseError(
                    216, "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING", f"Query with id = {query_id} is already running"
                )
            self._running_ids.add(query_id)

    def _wrap(self, fn):
        try:
            return fn()
        except ClickHouseError:
            raise
        except Exception as exc:  # chdb raises RuntimeError subclasses with ClickHouse's text
            raise ClickHouseError.from_engine(exc, self.error_names) from exc

    def _sessionless(self, request: QueryRequest) -> QueryResult:
        chdb = self._take()
        reusable = False
        try:
            try:
                return self._wrap(lambda: self._with_request_state(chdb, request))
            finally:
                try:
                    self._wrap(lambda: self._restore(chdb, request))
                    reusable = True
                except ClickHouseError:
                    pass  # unknown state is left behind: the session is closed, never reused
        finally:
            if reusable:
                self._give_back(chdb)
            else:
                chdb.close()

    def _with_request_state(self, chdb: _ChdbSession, request: QueryRequest) -> QueryResult:
        if request.database:
            chdb.conn.query(f"USE {ident(request.database)}")
        chdb.set(request.settings)
        return self._run_with_external(chdb, request)

    def _run_with_external(self, chdb: _ChdbSession, request: QueryRequest) -> QueryResult:
        created = []
        try:
            for table in request.external:
                chdb.conn.query(f"CREATE TEMPORARY TABLE {ident(table.name)} ({table.structure}) ENGINE = Memory")
                created.append(table.name)
                chdb.insert_data(f"INSERT INTO {ident(table.name)}", table.fmt, table.data)
            return chdb.run(request)
        finally:
            for name in created:
                chdb.conn.query(f"DROP TEMPORARY TABLE IF EXISTS {ident(name)}")

    def _restore(self, chdb: _ChdbSession, request: QueryRequest) -> None:
        """Put a pooled session back to its startup database, settings and no temporary tables.

        The URL settings and database are reset without looking. Only a SET or
        USE statement can change anything else, and only then is system.settings
        scanned for what it changed (the scan costs ~10 ms, more than most
        queries). The URL settings are reset before that scan: one of them
        (limit, max_result_rows, ...) could otherwise truncate it. Values are
        restored explicitly (not with SET x = DEFAULT) because the baseline
        itself differs from the engine defaults (FORCED_SETTINGS).
        """
        baseline = self.baseline
        chdb.set({name: baseline[name] for name in request.settings if name in baseline})
        verb = first_verb(request.sql)
        if verb == b"CREATE" and _is_temporary_create(request.sql):
            for (name,) in chdb.rows("SELECT name FROM system.tables WHERE is_temporary"):
                chdb.conn.query(f"DROP TEMPORARY TABLE IF EXISTS {ident(name)}")
        if verb not in (b"SET", b"USE"):
            if request.database:
                chdb.conn.query(f"USE {ident(baseline[''])}")
            return
        state = chdb.state()
        if state.pop("") != baseline[""]:
            chdb.conn.query(f"USE {ident(baseline[''])}")
        chdb.set({name: baseline[name] for name, value in state.items() if name in baseline and value != baseline[name]})

    def _in_session(self, chdb: _ChdbSession, request: QueryRequest) -> QueryResult:
        """In an HTTP session: SET and USE persist; URL settings and database apply to this query only."""
        verb = first_verb(request.sql)
        settings = {} if verb == b"SET" else request.settings
        database = None if verb == b"USE" else request.database

        def run():
            before = {}
            if settings:
                names = ", ".join(quote(name) for name in settings)
                before = dict(chdb.rows(f"SELECT name, value FROM system.settings WHERE name IN ({names})"))
            previous_db = chdb.rows("SELECT currentDatabase()")[0][0] if database else None
            try:
                if database:
                    chdb.conn.query(f"USE {ident(database)}")
                chdb.set(settings)
                return self._run_with_external(chdb, request)
            finally:
                chdb.set({name: value for name, value in before.items()})
                if previous_db is not None:
                    chdb.conn.query(f"USE {ident(previous_db)}")

        return self._wrap(run)

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions.values():
                session.chdb.close()
            self._sessions.clear()
        with self._pool_lock:
            for chdb in self._pool:
                chdb.close()
            self._pool.clear()
