"""Safe by default: credentials (checked before the body), browsers kept out, features that
reach files, URLs or other servers refused, caps, and readonly as clickhouse-server defines it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import pytest

from support import AUTH, PASSWORD, SERVER, ServerProcess, free_port, request, unique

ERROR_SHAPE = rb"^Code: %d\. DB::Exception: .+\. \(%s\) \(version 26\.9\.[\d.]+\)\n$"


def assert_error(response, status, code, name):
    got_status, headers, body = response
    assert (got_status, headers["x-clickhouse-exception-code"]) == (status, str(code)), body
    assert re.match(ERROR_SHAPE % (code, name.encode()), body, re.S), body


def raw_exchange(port, head: bytes, first_body: bytes = b"", timeout=5.0) -> tuple[bytes, float]:
    """Send a request head (and maybe the start of its body); return the raw response and the time it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head + first_body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


def test_wrong_credentials_refused_before_a_100_mb_body(server):
    """The answer comes while the body is still unsent: the server never waited to read it."""
    head = (
        b"POST /?query=INSERT%20INTO%20t%20FORMAT%20RowBinary HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-ClickHouse-User: default\r\nX-ClickHouse-Key: wrong\r\nContent-Length: 104857600\r\n\r\n"
    )
    response, took = raw_exchange(server.port, head, b"\0" * 65536)
    assert took < 2
    assert response.startswith(b"HTTP/1.1 403 ")
    assert b"\r\nX-ClickHouse-Exception-Code: 516\r\n" in response
    assert b"\r\nConnection: close\r\n" in response
    assert response.split(b"\r\n\r\n", 1)[1].startswith(
        b"Code: 516. DB::Exception: default: Authentication failed: password is incorrect, or there is no user with "
        b"such name. (AUTHENTICATION_FAILED) (version 26.9."
    )


def test_expect_100_continue_only_after_credentials(server):
    head = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-Key: wrong\r\nContent-Length: 8\r\n"
            b"Expect: 100-continue\r\n\r\n")
    response, _ = raw_exchange(server.port, head)
    assert response.startswith(b"HTTP/1.1 403 ")  # no 100 Continue first
    head = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-Key: " + PASSWORD.encode() +
            b"\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"SELECT 3")
        final = b""
        while not final.endswith(b"\r\n\r\n3\n"):
            chunk = sock.recv(65536)
            assert chunk, final
            final += chunk
        assert final.startswith(b"HTTP/1.1 200 OK\r\n")


def test_announced_body_over_the_cap_refused_unread(tmp_path):
    server = ServerProcess(str(tmp_path / "data"), extra_args=("--max-body-bytes", "1000"))
    try:
        head = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-Key: " + PASSWORD.encode() +
                b"\r\nContent-Length: 5000\r\n\r\n")
        response, took = raw_exchange(server.port, head)
        assert took < 2 and response.startswith(b"HTTP/1.1 413 ")
        assert b"Code: 229. DB::Exception: Request body of 5000 bytes exceeds the limit of 1000 bytes" in response
        assert_error(request(server.port, body=b"SELECT 1 -- " + b"x" * 2000), 413, 229, "QUERY_IS_TOO_LARGE")
        assert request(server.port, body=b"SELECT 1")[::2] == (200, b"1\n")
    finally:
        server.kill()


def test_query_length_cap(tmp_path):
    server = ServerProcess(str(tmp_path / "data"), extra_args=("--max-query-bytes", "100"))
    try:
        assert_error(request(server.port, body=b"SELECT 1 -- " + b"x" * 200), 400, 62, "SYNTAX_ERROR")
        table = unique("cap")
        assert request(server.port, body=f"CREATE TABLE {table} (a UInt32) ENGINE=Memory".encode())[0] == 200
        rows = b"".join(b"%d\n" % i for i in range(1000))  # data after FORMAT does not count
        status, _, body = request(server.port, body=f"INSERT INTO {table} FORMAT TSV\n".encode() + rows)
        assert status == 200, body
    finally:
        server.kill()


def test_password_required_unless_local_only(tmp_path):
    port = free_port()
    result = subprocess.run([sys.executable, SERVER, "--port", str(port), "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "a password is required" in result.stderr and "--local-only" in result.stderr
    result = subprocess.run([sys.executable, SERVER, "--port", str(port), "--data-dir", str(tmp_path / "d"),
                             "--local-only", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "loopback" in result.stderr
    server = ServerProcess(str(tmp_path / "data"), password="", extra_args=("--local-only",))
    try:
        assert request(server.port, body=b"SELECT 1", auth=False)[::2] == (200, b"1\n")
        assert_error(request(server.port, body=b"SELECT 1", auth=False, params={"user": "bob"}), 403, 516,
                     "AUTHENTICATION_FAILED")
    finally:
        server.kill()


# --------------------------------------------------------------------------
# Browsers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:8080"},  # another local port is another origin (e.g. the console)
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Host": "rebound.evil.example:8123"},  # DNS rebinding: a page's own name pointed at 127.0.0.1
])
def test_browser_requests_refused(server, headers):
    assert_error(request(server.port, body=b"SELECT 1", headers=headers), 403, 497, "ACCESS_DENIED")
    assert_error(request(server.port, "GET", params={"query": "SELECT 1"}, headers=headers), 403, 497, "ACCESS_DENIED")


def test_same_origin_and_configured_origin_allowed(server, tmp_path):
    own = f"127.0.0.1:{server.port}"
    assert request(server.port, body=b"SELECT 1", headers={"Origin": f"http://{own}", "Host": own})[0] == 200
    assert request(server.port, body=b"SELECT 1", headers={"Sec-Fetch-Site": "none"})[0] == 200
    assert request(server.port, body=b"SELECT 1", headers={"Host": f"localhost:{server.port}"})[0] == 200
    other = ServerProcess(str(tmp_path / "data"), extra_args=("--allowed-origins", "http://localhost:3000",
                                                              "--allowed-hosts", "ch.internal"))
    try:
        assert request(other.port, body=b"SELECT 1", headers={"Origin": "http://localhost:3000"})[0] == 200
        assert request(other.port, body=b"SELECT 1", headers={"Host": "ch.internal:8123"})[0] == 200
        assert request(other.port, body=b"SELECT 1", headers={"Origin": "http://localhost:3001"})[0] == 403
    finally:
        other.kill()


# --------------------------------------------------------------------------
# Features that reach outside the data directory
# --------------------------------------------------------------------------

REFUSED = [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM FILE('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file /* a comment */ ('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k.csv')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM hdfs('hdfs://h/x', 'CSV')",
    "SELECT * FROM icebergS3('http://127.0.0.1:1/x')",
    "INSERT INTO FUNCTION file('/tmp/leadlab-out.csv', 'CSV', 'a UInt8') SELECT 1",
    "SELECT 1 INTO OUTFILE '/tmp/leadlab-out.tsv'",
    "INSERT INTO t FROM INFILE '/etc/passwd' FORMAT LineAsString",
    "CREATE TABLE f (a String) ENGINE = File(CSV)",
    "CREATE TABLE u (a String) ENGINE = URL('http://127.0.0.1:1/', CSV)",
    "CREATE DATABASE fsdb ENGINE = Filesystem('/etc')",
    "CREATE TABLE d (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/x/')",
    "CREATE DICTIONARY dct (a UInt64) PRIMARY KEY a SOURCE(FILE(path '/etc/passwd' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
    "SELECT 1 SETTINGS format_schema = '/etc/passwd'",
    "SET format_template_row = '/etc/passwd'",
    "BACKUP TABLE system.one TO File('/tmp/leadlab-backup')",
    "SYSTEM SHUTDOWN",
    # ClickHouse's lexer: a heredoc and nested comments hide the quotes that would otherwise hide file()
    "SELECT $$ ' $$, file('/etc/passwd') -- '",
    "SELECT /* /* */ ' */ 1, file('/etc/passwd') -- '",
    "SELECT 1 # comment\n, file('/etc/passwd')",
    "SELECT\u00a0file('/etc/passwd')",  # ClickHouse skips Unicode whitespace between tokens
    "SELECT file\u00a0('/etc/passwd')",
    "SELECT \"file\"('/etc/passwd')",
    "SELECT 1abc, file('/etc/passwd')",
    "DESCRIBE TABLE file('/etc/passwd', 'CSVWithNames')",  # schema inference reads the file
    "DESCRIBE url('http://127.0.0.1:1/x.csv')",
    "CREATE TABLE copy AS file('/etc/passwd', 'LineAsString')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused_features(server, sql):
    assert_error(request(server.port, body=sql.encode()), 403, 497, "ACCESS_DENIED")


def test_refused_setting_in_url(server):
    assert_error(request(server.port, body=b"SELECT 1", params={"format_schema": "/etc/passwd"}), 403, 497, "ACCESS_DENIED")
    assert_error(request(server.port, body=b"SELECT 1", params={"dialect": "kusto"}), 403, 497, "ACCESS_DENIED")
    assert_error(request(server.port, body=b"SET dialect = 'kusto'"), 403, 497, "ACCESS_DENIED")


def test_refused_in_insert_values_and_query_parameters(server, q):
    table = unique("vals")
    q(f"CREATE TABLE {table} (s String) ENGINE=Memory")
    assert_error(request(server.port, body=f"INSERT INTO {table} VALUES (file('/etc/passwd'))".encode()), 403, 497,
                 "ACCESS_DENIED")
    # the Values format evaluates expressions in its data, whether after FORMAT or in a body
    assert_error(request(server.port, body=f"INSERT INTO {table} FORMAT Values ('x'), (file('/etc/passwd'))".encode()),
                 403, 497, "ACCESS_DENIED")
    assert_error(request(server.port, body=b"(FILE /**/ ('/etc/passwd'))",
                         params={"query": f"INSERT INTO {table} FORMAT Values"}), 403, 497, "ACCESS_DENIED")
    status, _, body = request(server.port, body=b"('url'), (concat('file', '(x)'))",
                              params={"query": f"INSERT INTO {table} FORMAT Values"})
    assert status == 200, body  # names inside strings are data
    assert q(f"SELECT s FROM {table} ORDER BY s") == b"file(x)\nurl\n"
    assert_error(request(server.port, body=b"SELECT * FROM file({p:String}, 'LineAsString')",
                         params={"param_p": "/etc/passwd"}), 403, 497, "ACCESS_DENIED")


ALLOWED = [
    ("SELECT 1 AS file, 2 AS url", b"1\t2\n"),
    ("SELECT 'file(''/etc/passwd'')' AS s", b"file(\\'/etc/passwd\\')\n"),
    ("SELECT 1 -- file('/etc/passwd')", b"1\n"),
    ("SELECT /* url('x') */ 2", b"2\n"),
    ("SELECT $$file('/etc/passwd')$$", b"file(\\'/etc/passwd\\')\n"),
    ("SELECT count() FROM (SELECT 1 AS s3) WHERE s3 = 1", b"1\n"),
    ("SELECT URLHierarchy('http://a/b')", b"['http://a/','http://a/b']\n"),
    ("SELECT 'é' AS file, 0x1F AS url", b"\xc3\xa9\t31\n"),
]


@pytest.mark.parametrize("sql,expected", ALLOWED)
def test_lookalikes_allowed(server, sql, expected):
    assert request(server.port, body=sql.encode())[::2] == (200, expected)


def test_table_and_columns_named_like_functions(server, q):
    db = unique("names")
    q(f"CREATE DATABASE {db}")
    q("CREATE TABLE url (file String, remote UInt8) ENGINE = MergeTree ORDER BY file", database=db)
    q("CREATE TABLE IF NOT EXISTS s3 (a UInt8) ENGINE = Memory", database=db)
    q("INSERT INTO url (file, remote) VALUES ('x', 1)", database=db)
    q(f"INSERT INTO TABLE {db}.url (file, remote) VALUES ('y', 2)")
    assert q("SELECT file, remote FROM url ORDER BY file", database=db) == b"x\t1\ny\t2\n"


# --------------------------------------------------------------------------
# readonly
# --------------------------------------------------------------------------


def test_get_is_readonly_2(server):
    """GET may read and change settings (readonly=2), but not write or lift readonly."""
    get = lambda query, **params: request(server.port, "GET", params=dict(params, query=query))  # noqa: E731
    assert get("SELECT getSetting('max_threads')", max_threads="1")[::2] == (200, b"1\n")
    assert get("SET max_threads = 1")[0] == 200
    assert_error(get(f"CREATE TABLE {unique('ro')} (a UInt8) ENGINE=Memory"), 500, 164, "READONLY")
    assert_error(get("INSERT INTO t FORMAT TSV"), 500, 164, "READONLY")
    assert_error(get("SELECT 1 SETTINGS readonly = 0"), 500, 164, "READONLY")


def test_readonly_1_forbids_setting_changes(server):
    ro = {"readonly": "1"}
    assert request(server.port, body=b"SELECT 1", params=ro)[::2] == (200, b"1\n")
    assert_error(request(server.port, body=b"SELECT 1", params=dict(ro, max_threads="1")), 500, 164, "READONLY")
    assert_error(request(server.port, body=b"SET max_threads = 1", params=ro), 500, 164, "READONLY")
    assert_error(request(server.port, body=b"SELECT 1 SETTINGS max_threads = 1", params=ro), 500, 164, "READONLY")
    assert_error(request(server.port, body=b"DROP TABLE IF EXISTS nothing_here", params=ro), 500, 164, "READONLY")
    status, _, body = request(server.port, body=b"SELECT 1", params={"readonly": "2", "max_threads": "1"})
    assert (status, body) == (200, b"1\n")
    assert_error(request(server.port, body=b"SELECT 1", params={"readonly": "3"}), 400, 36, "BAD_ARGUMENTS")


def test_plain_writes_still_work(server, q):
    """Internal-style statements (what `lead-lab migrate` sends) pass every check."""
    db = unique("mig")
    q(f"CREATE DATABASE IF NOT EXISTS {db}")
    q(f"CREATE TABLE {db}.t (ts DateTime64(9), attrs Map(LowCardinality(String), String)) "
      "ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY ts TTL toDateTime(ts) + INTERVAL 30 DAY")
    q(f"CREATE MATERIALIZED VIEW {db}.mv ENGINE = MergeTree ORDER BY k AS SELECT attrs['k'] AS k FROM {db}.t")
    q(f"ALTER TABLE {db}.t ADD COLUMN IF NOT EXISTS note String")
    assert request(server.port, body=b"SELECT 1", headers=AUTH)[0] == 200
