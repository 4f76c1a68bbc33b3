"""Tests for the dev/CI ClickHouse HTTP server (clickhouse/local/server.py).

Every request goes over real HTTP to a server subprocess (helpers in support.py).
"""

from __future__ import annotations

import base64
import glob
import gzip
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from support import AUTH, PASSWORD, SERVER, USER, ServerProcess, frame_block, post, rb_string, request, unframe, unique

# --------------------------------------------------------------------------
# Endpoints, query text, read-only GET
# --------------------------------------------------------------------------


def test_ping_and_root(server):
    assert request(server.port, "GET", "/ping", auth=False)[::2] == (200, b"Ok.\n")
    assert request(server.port, "GET", "/", auth=False)[::2] == (200, b"Ok.\n")
    assert request(server.port, "GET", "/nowhere")[0] == 404


def test_get_query_and_readonly(server):
    status, headers, body = request(server.port, "GET", params={"query": "SELECT 1"})
    assert (status, body) == (200, b"1\n")
    table = unique("ro")
    status, headers, body = request(server.port, "GET", params={"query": f"CREATE TABLE {table} (a UInt8) ENGINE=Memory"})
    assert status == 500
    assert headers["x-clickhouse-exception-code"] == "164"
    assert body.startswith(b"Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)")
    assert post(server.port, f"EXISTS TABLE {table}", None, {})[2] == b"0\n"


def test_query_param_and_body_are_joined_with_newline(server):
    assert request(server.port, body=b"1 + 1", params={"query": "SELECT"})[::2] == (200, b"2\n")


def test_insert_forms(server, q):
    table = unique("ins")
    q(f"CREATE TABLE {table} (a UInt32, s String) ENGINE=MergeTree ORDER BY a")
    q(f"INSERT INTO {table} (s, a) FORMAT TabSeparated", body=b"one\t1\ntwo\t2\n")
    q(f"INSERT INTO {table} FORMAT CSV\n3,\"three\"\n")
    q(f"INSERT INTO {table} VALUES (4, 'four'), (5, 'f\\'ive')")
    q(f"INSERT INTO {table} FORMAT JSONEachRow", body=b'{"a": 6, "s": "six"}\n{"a": 7, "s": "seven"}')
    q(f"INSERT INTO {table} SELECT 8, 'eight'")
    assert q(f"SELECT a, s FROM {table} ORDER BY a") == (
        b"1\tone\n2\ttwo\n3\tthree\n4\tfour\n5\tf\\'ive\n6\tsix\n7\tseven\n8\teight\n"
    )


def test_rowbinary_insert_and_typed_select(server, q):
    table = unique("rb")
    q(f"CREATE TABLE {table} (id UInt64, name String, ts DateTime64(9)) ENGINE=MergeTree ORDER BY id")
    rows = b"".join(
        struct.pack("<Q", i) + rb_string(f"n{i}") + struct.pack("<q", 1_700_000_000_123_456_789 + i) for i in range(3)
    )
    _, headers, _ = post(server.port, f"INSERT INTO {table} (id, name, ts) FORMAT RowBinary", rows, {})
    assert json.loads(headers["x-clickhouse-summary"])["written_rows"] == "3"
    _, headers, body = post(server.port, f"SELECT id, name FROM {table} WHERE id = 2 FORMAT RowBinaryWithNamesAndTypes", None, {})
    assert body == b"\x02\x02id\x04name\x06UInt64\x06String" + struct.pack("<Q", 2) + rb_string("n2")
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-clickhouse-format"] == "RowBinaryWithNamesAndTypes"
    assert q(f"SELECT toString(ts) FROM {table} WHERE id = 1") == b"2023-11-14 22:13:20.123456790\n"


def test_select_formats_and_default_format(server, q):
    table = unique("fmt")
    q(f"CREATE TABLE {table} (a UInt64, s String) ENGINE=MergeTree ORDER BY a")
    q(f"INSERT INTO {table} VALUES (1, 'x'), (2, 'y')")
    _, headers, body = post(server.port, f"SELECT * FROM {table} ORDER BY a FORMAT JSONEachRow", None, {})
    assert body == b'{"a":1,"s":"x"}\n{"a":2,"s":"y"}\n'
    assert headers["content-type"] == "application/json; charset=UTF-8"
    doc = json.loads(q(f"SELECT * FROM {table} ORDER BY a FORMAT JSON"))
    assert doc["data"] == [{"a": 1, "s": "x"}, {"a": 2, "s": "y"}]
    assert doc["meta"] == [{"name": "a", "type": "UInt64"}, {"name": "s", "type": "String"}]
    _, headers, body = post(server.port, f"SELECT * FROM {table} ORDER BY a", None, {"default_format": "TabSeparatedWithNames"})
    assert body == b"a\ts\n1\tx\n2\ty\n"
    assert headers["x-clickhouse-format"] == "TabSeparatedWithNames"
    assert headers["content-type"] == "text/tab-separated-values; charset=UTF-8"


def test_native_round_trip(server, q):
    src, dst = unique("nat_src"), unique("nat_dst")
    ddl = "(id UInt32, tags Array(String), attrs Map(LowCardinality(String), String)) ENGINE=MergeTree ORDER BY id"
    q(f"CREATE TABLE {src} {ddl}")
    q(f"CREATE TABLE {dst} {ddl}")
    q(f"INSERT INTO {src} VALUES (1, ['a','b'], {{'k':'v'}}), (2, [], {{}})")
    native = q(f"SELECT * FROM {src} ORDER BY id FORMAT Native")
    q(f"INSERT INTO {dst} FORMAT Native", body=native)
    assert q(f"SELECT * FROM {dst} ORDER BY id") == b"1\t['a','b']\t{'k':'v'}\n2\t[]\t{}\n"


# --------------------------------------------------------------------------
# Settings, database, query parameters
# --------------------------------------------------------------------------


def test_settings_apply_per_request_only(server, q):
    assert q("SELECT getSetting('max_threads')", max_threads="1") == b"1\n"
    default_threads = q("SELECT getSetting('max_threads')")
    assert default_threads != b"1\n"
    q("SET max_threads = 1")  # a SET inside one request is not kept either
    assert q("SELECT getSetting('max_threads')") == default_threads
    q("/* leading comment */ SET max_threads = 1")
    assert q("SELECT getSetting('max_threads')") == default_threads
    q("SELECT 1", limit="1", max_result_rows="1", result_overflow_mode="throw", max_threads="1")
    assert q("SELECT getSetting('max_threads')") == default_threads
    # 26.9 no longer quotes 64-bit integers in JSON by default
    assert q("SELECT toUInt64(1) AS n FORMAT JSONEachRow", output_format_json_quote_64bit_integers="1") == b'{"n":"1"}\n'
    assert q("SELECT toUInt64(1) AS n FORMAT JSONEachRow") == b'{"n":1}\n'


def test_http_only_params_are_not_settings(server, q):
    params = {
        "wait_end_of_query": "1", "session_timeout": "60", "buffer_size": "1000", "http_max_field_value_size": "1",
        "max_execution_time": "5", "query_id": "my-query-id", "compress": "0", "enable_http_compression": "0",
    }
    _, headers, body = post(server.port, "SELECT 42", None, params)
    assert body == b"42\n"
    assert headers["x-clickhouse-query-id"] == "my-query-id"
    assert headers["x-clickhouse-timezone"]
    assert headers["x-clickhouse-server-display-name"]
    status, headers, body = request(server.port, body=b"SELECT 1", params={"no_such_setting": "1"})
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "115")


def test_async_insert_rows_visible_and_per_request_input_format(server, q):
    table = unique("ai")
    q(f"CREATE TABLE {table} (ts DateTime, v UInt8) ENGINE=MergeTree ORDER BY ts")
    row = b'{"ts":"2024-01-02T03:04:05Z","v":1}\n'
    q(f"INSERT INTO {table} FORMAT JSONEachRow", body=row, async_insert="1", wait_for_async_insert="0")
    assert q(f"SELECT toString(ts), v FROM {table}") == b"2024-01-02 03:04:05\t1\n"
    # best_effort is the 26.9 default; basic (as a URL setting) rejects the ISO 8601 'T' form
    status, headers, _ = request(server.port, body=row, params={
        "query": f"INSERT INTO {table} FORMAT JSONEachRow", "date_time_input_format": "basic"})
    assert (status, headers["x-clickhouse-exception-code"]) != (200, None)
    assert q("SELECT getSetting('date_time_input_format'), getSetting('async_insert')") == b"best_effort\tfalse\n"


def test_database_param_is_per_request(server, q):
    db = unique("db")
    q(f"CREATE DATABASE {db}")
    q("CREATE TABLE only_here (a UInt8) ENGINE=MergeTree ORDER BY a", database=db)
    q("INSERT INTO only_here FORMAT TabSeparated", body=b"7\n", database=db)
    assert q("SELECT currentDatabase(), a FROM only_here", database=db) == f"{db}\t7\n".encode()
    q(f"USE {db}")
    assert q("SELECT currentDatabase()") == b"default\n"
    status, headers, _ = request(server.port, body=b"SELECT 1", params={"database": "no_such_db"})
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "81")


def test_query_parameters(server, q):
    body = q("SELECT {n:UInt32} * 2, {s:String}, {arr:Array(UInt8)}", param_n="21", param_s="a\\tb", param_arr="[1,2]")
    assert body == b"42\ta\\tb\t[1,2]\n"


# --------------------------------------------------------------------------
# Compression and body transfer
# --------------------------------------------------------------------------


def test_decompress_request_body(server, q):
    table = unique("lz")
    q(f"CREATE TABLE {table} (a UInt32, s String) ENGINE=MergeTree ORDER BY a")
    body = frame_block(b"1\tone\n2\ttwo\n") + frame_block(b"3\tthree\n", method=0x02)
    q(f"INSERT INTO {table} FORMAT TabSeparated", body=body, decompress="1")
    assert q(f"SELECT * FROM {table} ORDER BY a") == b"1\tone\n2\ttwo\n3\tthree\n"


def test_decompress_bad_checksum(server, q):
    body = bytearray(frame_block(b"SELECT 1"))
    body[0] ^= 0xFF
    status, headers, data = request(server.port, body=bytes(body), params={"decompress": "1"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "40")
    assert data.startswith(b"Code: 40. DB::Exception: Checksum doesn't match: corrupted data.")
    assert data.rstrip().endswith(b"(CHECKSUM_DOESNT_MATCH) (version 26.9.2.1)")


def test_decompress_known_good_vector_written_by_clickhouse(server, q):
    """A MergeTree column file is a sequence of ClickHouse compressed blocks written by the engine itself."""
    src, dst = unique("kv_src"), unique("kv_dst")
    q(f"CREATE TABLE {src} (a UInt64 CODEC(LZ4)) ENGINE=MergeTree ORDER BY tuple() SETTINGS min_bytes_for_wide_part=0")
    q(f"INSERT INTO {src} SELECT number FROM numbers(20000)")
    q(f"CREATE TABLE {dst} (a UInt64) ENGINE=MergeTree ORDER BY tuple()")
    data_path = q(f"SELECT data_paths[1] FROM system.tables WHERE name = '{src}'", default_format="TabSeparatedRaw").strip()
    (bin_file,) = glob.glob(os.path.join(data_path.decode(), "*", "a.bin"))
    q(f"INSERT INTO {dst} FORMAT RowBinary", body=open(bin_file, "rb").read(), decompress="1")
    assert q(f"SELECT count(), sum(a) FROM {dst}") == b"20000\t199990000\n"


def test_compress_response(server, q):
    small = q("SELECT number FROM numbers(3) FORMAT TabSeparated", compress="1")
    assert unframe(small) == b"0\n1\n2\n"
    big = q("SELECT repeat('x', 100) FROM numbers(20000) FORMAT TabSeparated", compress="1")
    assert unframe(big) == (b"x" * 100 + b"\n") * 20000
    assert big[16] == 0x82 and struct.unpack_from("<I", big, 21)[0] == 1 << 20  # first block: 1 MiB uncompressed


def test_chunked_request_body(server, q):
    table = unique("chunk")
    q(f"CREATE TABLE {table} (a UInt32) ENGINE=MergeTree ORDER BY a")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    query = urllib.parse.urlencode({"query": f"INSERT INTO {table} FORMAT TabSeparated"})
    conn.request("POST", "/?" + query, body=iter([b"1\n2", b"\n3\n", b"4\n"]), headers=AUTH, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    conn.close()
    assert q(f"SELECT sum(a), count() FROM {table}") == b"10\t4\n"


def test_gzip_request_and_response(server):
    status, _, body = request(server.port, body=gzip.compress(b"SELECT 5"), headers={"Content-Encoding": "gzip"})
    assert (status, body) == (200, b"5\n")
    status, headers, body = request(
        server.port, body=b"SELECT 6", params={"enable_http_compression": "1"}, headers={"Accept-Encoding": "gzip"}
    )
    assert (status, headers["content-encoding"], gzip.decompress(body)) == (200, "gzip", b"6\n")


# --------------------------------------------------------------------------
# Authentication and errors
# --------------------------------------------------------------------------


def test_authentication_methods(server):
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert request(server.port, body=b"SELECT 1", headers={"Authorization": basic}, auth=False)[0] == 200
    assert request(server.port, body=b"SELECT 1", params={"user": USER, "password": PASSWORD}, auth=False)[0] == 200
    assert request(server.port, body=b"SELECT 1", params={"password": PASSWORD}, auth=False)[0] == 200  # user defaults


@pytest.mark.parametrize(
    "headers,params,user",
    [
        ({"X-ClickHouse-User": "default", "X-ClickHouse-Key": "wrong"}, {}, "default"),
        ({}, {"user": "bob", "password": PASSWORD}, "bob"),
        ({}, {}, "default"),
    ],
)
def test_authentication_failure(server, headers, params, user):
    status, resp_headers, body = request(server.port, body=b"SELECT 1", params=params, headers=headers, auth=False)
    assert status == 403  # clickhouse-server answers AUTHENTICATION_FAILED with 403 Forbidden
    assert resp_headers["x-clickhouse-exception-code"] == "516"
    assert body.decode().startswith(
        f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
        "or there is no user with such name. (AUTHENTICATION_FAILED)"
    )


def test_error_shapes(server):
    status, headers, body = request(server.port, body=b"SELEC 1")
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "62")
    assert re.match(rb"Code: 62\. DB::Exception: Syntax error.*\(SYNTAX_ERROR\) \(version 26\.9\.[\d.]+\)\n$", body, re.S)
    status, headers, body = request(server.port, body=b"SELECT * FROM no_such_table")
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "60")
    assert b"(UNKNOWN_TABLE)" in body
    status, headers, body = request(server.port, body=b"SELECT throwIf(1)")
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "395")
    status, headers, body = request(server.port, body=b"")
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "62")


# --------------------------------------------------------------------------
# Table engines and features the project relies on
# --------------------------------------------------------------------------


def test_materialized_view_fires_on_rowbinary_insert(server, q):
    db = unique("mv")
    q(f"CREATE DATABASE {db}")
    q(
        "CREATE TABLE otel_traces (Timestamp DateTime64(9), TraceId String, SpanName LowCardinality(String), "
        "SpanAttributes Map(LowCardinality(String), String)) ENGINE=MergeTree ORDER BY (SpanName, Timestamp)",
        database=db,
    )
    q("CREATE TABLE submits (TraceId String, Lead String) ENGINE=ReplacingMergeTree ORDER BY TraceId", database=db)
    q(
        "CREATE MATERIALIZED VIEW submits_mv TO submits AS SELECT TraceId, SpanAttributes['lead.id'] AS Lead "
        "FROM otel_traces WHERE SpanName = 'lead.submit'",
        database=db,
    )

    def row(ts, trace, span, attrs):
        encoded = b"".join(rb_string(k) + rb_string(v) for k, v in attrs.items())
        return struct.pack("<q", ts) + rb_string(trace) + rb_string(span) + bytes([len(attrs)]) + encoded

    rows = row(1, "t1", "lead.submit", {"lead.id": "L1"}) + row(2, "t2", "other", {"lead.id": "L2"})
    body = frame_block(rows)
    q("INSERT INTO otel_traces (Timestamp, TraceId, SpanName, SpanAttributes) FORMAT RowBinary",
      body=body, decompress="1", async_insert="1", database=db)
    assert q("SELECT TraceId, Lead FROM submits", database=db) == b"t1\tL1\n"


def test_nested_columns_insert_with_dotted_names(server, q):
    table = unique("nested")
    q(
        f"CREATE TABLE {table} (TraceId String, `Events.Timestamp` Array(DateTime64(9)), "
        "`Events.Name` Array(LowCardinality(String)), Links Nested(TraceId String, SpanId String)) "
        "ENGINE=MergeTree ORDER BY TraceId"
    )
    describe = q(f"DESCRIBE TABLE {table} FORMAT TabSeparated")
    assert [line.split(b"\t")[0] for line in describe.splitlines()] == [
        b"TraceId", b"Events.Timestamp", b"Events.Name", b"Links.TraceId", b"Links.SpanId",
    ]
    columns = "(TraceId, `Events.Timestamp`, `Events.Name`, `Links.SpanId`, `Links.TraceId`)"

    def row(trace, timestamps, names):
        return (
            rb_string(trace) + bytes([len(timestamps)]) + b"".join(struct.pack("<q", t) for t in timestamps)
            + bytes([len(names)]) + b"".join(rb_string(n) for n in names) + b"\x01" + rb_string("ls") + b"\x01" + rb_string("lt")
        )

    q(f"INSERT INTO {table} {columns} FORMAT RowBinary", body=row("t1", [5, 6], ["a", "b"]))
    assert q(f"SELECT Events.Name, Links.TraceId, Links.SpanId FROM {table}") == b"['a','b']\t['lt']\t['ls']\n"
    # a Nested group with arrays of different sizes is rejected, not silently dropped
    status, headers, _ = request(server.port, body=row("t2", [5], ["a", "b"]),
                                 params={"query": f"INSERT INTO {table} {columns} FORMAT RowBinary"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "190")
    assert q(f"SELECT count() FROM {table}") == b"1\n"


def test_rowbinary_with_names_and_types_insert_after_describe(server, q):
    """What the Rust clickhouse crate does with validation on."""
    table = unique("rbnt")
    q(f"CREATE TABLE {table} (id UInt32, name LowCardinality(String), v Float64 DEFAULT 1.5, "
      "CONSTRAINT positive CHECK id > 0) ENGINE=MergeTree ORDER BY id")
    described = q(f"DESCRIBE TABLE {table} FORMAT RowBinaryWithNamesAndTypes")
    assert described.startswith(b"\x07\x04name\x04type")
    header = b"\x02" + rb_string("name") + rb_string("id") + rb_string("LowCardinality(String)") + rb_string("UInt32")
    q(f"INSERT INTO {table} (`name`, `id`) FORMAT RowBinaryWithNamesAndTypes", body=header + rb_string("n") + struct.pack("<I", 3))
    assert q(f"SELECT id, name, v FROM {table}") == b"3\tn\t1.5\n"
    status, headers, _ = request(server.port, body=header + rb_string("z") + struct.pack("<I", 0),
                                 params={"query": f"INSERT INTO {table} (`name`, `id`) FORMAT RowBinaryWithNamesAndTypes"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "469")  # VIOLATED_CONSTRAINT


def test_engine_features(server, q):
    table = unique("feat")
    q(
        f"CREATE TABLE {table} (id UInt64 CODEC(Delta, ZSTD(1)), ts DateTime64(9) CODEC(DoubleDelta), "
        "kind LowCardinality(String), attrs Map(LowCardinality(String), String), "
        "INDEX idx_kind kind TYPE bloom_filter(0.01) GRANULARITY 1) "
        "ENGINE=ReplacingMergeTree ORDER BY id TTL toDateTime(ts) + INTERVAL 3650 DAY"
    )
    q(f"INSERT INTO {table} VALUES (1, now64(9), 'a', {{'k':'v1'}})")
    q(f"INSERT INTO {table} VALUES (1, now64(9), 'b', {{'k':'v2'}})")
    assert q(f"SELECT kind, attrs['k'] FROM {table} FINAL") == b"b\tv2\n"
    assert q(f"SELECT count() FROM {table} WHERE kind = 'a'") == b"1\n"


# --------------------------------------------------------------------------
# Concurrency, keep-alive, lifecycle
# --------------------------------------------------------------------------


def test_concurrent_requests_with_keep_alive(server, q):
    table = unique("conc")
    q(f"CREATE TABLE {table} (worker UInt8, n UInt32) ENGINE=MergeTree ORDER BY (worker, n)")
    errors = []

    def work(worker):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for n in range(10):
                status, _, body = request(server.port, body=f"{worker}\t{n}\n".encode(), conn=conn,
                                          params={"query": f"INSERT INTO {table} FORMAT TabSeparated", "max_threads": str(worker + 1)})
                assert status == 200, body
                status, _, body = request(server.port, body=b"SELECT getSetting('max_threads')", conn=conn,
                                          params={"max_threads": str(worker + 1)})
                assert body == f"{worker + 1}\n".encode()
        except BaseException as exc:  # collected and asserted in the main thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert q(f"SELECT count(), uniqExact(worker, n) FROM {table}") == b"80\t80\n"


def test_restart_keeps_data_and_signals_exit_cleanly(tmp_path):
    data_dir = str(tmp_path / "data")
    first = ServerProcess(data_dir)
    try:
        post(first.port, "CREATE TABLE kept (a UInt32) ENGINE=MergeTree ORDER BY a", None, {})
        post(first.port, "INSERT INTO kept FORMAT TabSeparated", b"1\n2\n", {})
        idle = http.client.HTTPConnection("127.0.0.1", first.port, timeout=30)
        assert request(first.port, body=b"SELECT 1", conn=idle)[0] == 200  # an idle keep-alive connection stays open
        in_flight = []
        slow = threading.Thread(target=lambda: in_flight.append(request(first.port, body=b"SELECT sleep(1)")))
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert first.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5
        slow.join()
        assert in_flight[0][::2] == (200, b"0\n")  # the in-flight query finished before exit
    finally:
        first.kill()
    second = ServerProcess(data_dir)
    try:
        assert post(second.port, "SELECT sum(a) FROM kept", None, {})[2] == b"3\n"
        assert second.stop(signal.SIGINT) == 0
    finally:
        second.kill()


def test_port_in_use_fails_fast(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, SERVER, "--port", str(port), "--data-dir", str(tmp_path / "d"), "--local-only"],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert not os.path.exists(tmp_path / "d")  # exited before initializing the engine
    assert time.monotonic() - started < 5
