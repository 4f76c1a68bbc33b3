"""Compatibility suite: ClickHouse's official clients with their defaults, and curl for each
error and limit. (The Rust `clickhouse` crate is driven by the Rust integration tests,
tests/integration/clickhouse_http.rs, against the same server.)

Nothing here is skipped: a missing client is a failure that says how to install it
(scripts/test installs all of them).
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import subprocess
import time
import uuid

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from support import PASSWORD, ServerProcess, unique

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
JS_SCRIPT = os.path.join(os.path.dirname(__file__), "js", "compat.cjs")


# --------------------------------------------------------------------------
# clickhouse-connect (Python)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"compress": False}], ids=["defaults", "compress-false"])
def test_clickhouse_connect(server, options):
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="default", password=PASSWORD,
                                           **options)
    try:
        table = unique("pyc")
        client.command(f"CREATE TABLE {table} (id UInt32, name String, ts DateTime64(3, 'UTC'), tags Array(String)) "
                       "ENGINE = MergeTree ORDER BY id")
        ts = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
        rows = [[i, f"name {i}", ts, ["a", str(i)]] for i in range(1000)]
        summary = client.insert(table, rows, column_names=["id", "name", "ts", "tags"])
        assert summary.written_rows == 1000
        inserts = []
        for _ in range(50):  # the server logs a request just after answering it
            inserts = [line for line in open(server.log_path).read().splitlines() if "INSERT INTO" in line and table in line]
            if inserts:
                break
            time.sleep(0.05)
        expected = "content_encoding=-" if options else "content_encoding=lz4"  # the client's default: HTTP lz4
        assert len(inserts) == 1 and expected in inserts[0], inserts
        result = client.query(f"SELECT id, name, ts, tags FROM {table} WHERE id < 2 ORDER BY id")
        # a UTC DateTime64 comes back naive (clickhouse-connect's default for UTC columns)
        assert result.result_rows == [(r[0], r[1], ts.replace(tzinfo=None), r[3]) for r in rows[:2]]
        assert client.query(f"SELECT count(), sum(id) FROM {table}").result_rows == [(1000, 499500)]
        # parameters, both client-side ({name} / %(name)s) and server-side ({name:Type}) binding
        assert client.query("SELECT {n:UInt32} * 2, {s:String}", parameters={"n": 21, "s": "it's"}).result_rows == [
            (42, "it's")]
        # the client's session: SET persists for this client only
        client.command("SET max_threads = 1")
        assert client.command("SELECT getSetting('max_threads')") == 1
        with client.query_row_block_stream(f"SELECT id FROM {table} ORDER BY id") as stream:
            assert sum(len(block) for block in stream) == 1000
        with pytest.raises(DatabaseError, match=r"Code: 497\..*ACCESS_DENIED"):
            client.query("SELECT * FROM file('/etc/passwd', 'LineAsString')")
        with pytest.raises(DatabaseError, match=r"Code: 60\..*UNKNOWN_TABLE"):
            client.query("SELECT * FROM no_such_table_pyc")
        client.command(f"DROP TABLE {table}")
    finally:
        client.close()
    other = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="default", password=PASSWORD,
                                          **options)
    try:
        assert other.command("SELECT getSetting('max_threads') != 1") == 1
    finally:
        other.close()
    with pytest.raises(DatabaseError, match=r"Code: 516\..*AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(host="127.0.0.1", port=server.port, username="default", password="wrong", **options)


# --------------------------------------------------------------------------
# @clickhouse/client (JavaScript, Node.js)
# --------------------------------------------------------------------------


def test_official_js_client(server):
    node = shutil.which("node")
    assert node, "node (Node.js 18+) is not installed: scripts/test installs it (apt-get install nodejs npm)"
    modules = os.path.join(os.environ.get("LEADLAB_NODE_DIR") or os.path.join(ROOT, ".node"), "node_modules")
    assert os.path.isdir(os.path.join(modules, "@clickhouse", "client")), (
        f"@clickhouse/client is not installed in {modules}: scripts/test installs it (npm ci in LEADLAB_NODE_DIR)"
    )
    result = subprocess.run(
        [node, JS_SCRIPT], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, NODE_PATH=modules, CH_URL=f"http://127.0.0.1:{server.port}", CH_PASSWORD=PASSWORD),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["js client defaults: ok", "js client compressed: ok"]


# --------------------------------------------------------------------------
# curl: each refusal and limit
# --------------------------------------------------------------------------


def curl(port, *args, query=None, password=PASSWORD, params=None):
    """Run curl; returns (status, headers dict lower-cased, body bytes, seconds)."""
    assert shutil.which("curl"), "curl is not installed: scripts/test installs it (apt-get install curl)"
    url = f"http://127.0.0.1:{port}/"
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    header_file = f"/tmp/leadlab-curl-{uuid.uuid4().hex}"
    cmd = ["curl", "-sS", "-o", "-", "-D", header_file, url, "-u", f"default:{password}", *args]
    if query is not None:
        cmd += ["--data-binary", query]
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, timeout=60)
    took = time.monotonic() - started
    try:
        raw = open(header_file, "rb").read().decode("latin-1")
    finally:
        if os.path.exists(header_file):
            os.unlink(header_file)
    assert result.returncode == 0, result.stderr
    blocks = [b for b in raw.split("\r\n\r\n") if b.startswith("HTTP/")]
    final = blocks[-1].split("\r\n")
    status = int(final[0].split()[1])
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in final[1:] if ":" in line}
    return status, headers, result.stdout, took


def assert_curl_error(response, status, code, name):
    got, headers, body, _ = response
    assert (got, headers.get("x-clickhouse-exception-code")) == (status, str(code)), body
    assert body.startswith(f"Code: {code}. DB::Exception: ".encode()), body
    assert f"({name}) (version 26.9.".encode() in body, body


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    proc = ServerProcess(str(tmp_path_factory.mktemp("capped") / "data"), extra_args=(
        "--max-body-bytes", str(1 << 20), "--max-decompressed-bytes", str(4 << 20), "--max-query-bytes", "65536"))
    yield proc
    proc.kill()


def test_curl_query_and_compressed_response(server):
    status, headers, body, _ = curl(server.port, "--compressed", query="SELECT 'ok'",
                                    params={"enable_http_compression": "1"})
    assert (status, body) == (200, b"ok\n")
    assert headers["content-encoding"] in ("zstd", "br", "gzip", "deflate")
    gz = gzip.compress(b"SELECT 2 + 2")
    proc = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{server.port}/", "-u", f"default:{PASSWORD}",
                           "-H", "Content-Encoding: gzip", "--data-binary", "@-"], input=gz, capture_output=True, timeout=30)
    assert proc.stdout == b"4\n", proc.stderr


def test_curl_file_refused(server):
    assert_curl_error(curl(server.port, query="SELECT * FROM file('/etc/passwd', 'LineAsString')"), 403, 497,
                      "ACCESS_DENIED")
    assert_curl_error(curl(server.port, params={"query": "SELECT%20file('/etc/passwd')"}), 403, 497, "ACCESS_DENIED")


def test_curl_foreign_origin_refused(server):
    assert_curl_error(curl(server.port, "-H", "Origin: http://evil.example", query="SELECT 1"), 403, 497, "ACCESS_DENIED")
    assert_curl_error(curl(server.port, "-H", "Host: evil.example", query="SELECT 1"), 403, 497, "ACCESS_DENIED")


def test_curl_wrong_credentials_before_a_100_mb_body(server, tmp_path):
    big = tmp_path / "100mb.bin"
    with open(big, "wb") as f:
        f.truncate(100 << 20)
    response = curl(server.port, "--data-binary", f"@{big}", password="wrong",
                    params={"query": "INSERT%20INTO%20t%20FORMAT%20RowBinary"})
    assert_curl_error(response, 403, 516, "AUTHENTICATION_FAILED")
    assert response[3] < 5  # curl waited for 100 Continue and got the refusal instead: the body never went


def test_curl_oversized_bodies(capped, tmp_path):
    big = tmp_path / "2mb.bin"
    big.write_bytes(b"SELECT 1 -- " + b"x" * (2 << 20))
    assert_curl_error(curl(capped.port, "--data-binary", f"@{big}"), 413, 229, "QUERY_IS_TOO_LARGE")
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"SELECT 1 -- " + b"\0" * (64 << 20)))
    assert bomb.stat().st_size < (1 << 20)
    response = curl(capped.port, "-H", "Content-Encoding: gzip", "--data-binary", f"@{bomb}")
    assert_curl_error(response, 413, 229, "QUERY_IS_TOO_LARGE")
    assert b"--max-decompressed-bytes" in response[2]
    assert_curl_error(curl(capped.port, query="SELECT 1 -- " + "y" * 70000), 400, 62, "SYNTAX_ERROR")


def test_curl_readonly_unsupported_and_sessions(server):
    assert_curl_error(curl(server.port, "-G", "--data-urlencode", "query=CREATE TABLE x (a UInt8) ENGINE=Memory"), 500, 164,
                      "READONLY")
    assert_curl_error(curl(server.port, "-H", "Content-Encoding: compress", query="SELECT 1"), 501, 48, "NOT_IMPLEMENTED")
    assert_curl_error(curl(server.port, query="SELECT 1", params={"session_id": "none", "session_check": "1"}), 500, 372,
                      "SESSION_NOT_FOUND")
    assert_curl_error(curl(server.port, query="SELECT 1", params={"format_schema": "/etc/passwd"}), 403, 497,
                      "ACCESS_DENIED")
    status, headers, body, _ = curl(server.port, query="SELECT 1", params={"send_progress_in_http_headers": "1"})
    assert (status, body) == (200, b"1\n")
    assert json.loads(headers["x-clickhouse-summary"])["read_rows"] == "1"
