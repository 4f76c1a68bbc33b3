"""What official clients send without being told: HTTP compression both ways, sessions,
request and response headers, query parameters, external data, and concurrency."""

from __future__ import annotations

import bz2
import gzip
import http.client
import json
import lzma
import threading
import time
import urllib.parse
import uuid
import zlib

import brotli
import cramjam
import lz4.frame
import pytest
import zstandard

from support import AUTH, ServerProcess, frame_block, post, request, unframe, unique

# Independent encoders/decoders for every Content-Encoding clickhouse-server takes.
CODECS = {
    "gzip": (gzip.compress, gzip.decompress),
    "deflate": (zlib.compress, zlib.decompress),
    "br": (brotli.compress, brotli.decompress),
    "zstd": (lambda b: zstandard.ZstdCompressor().compress(b), lambda b: zstandard.ZstdDecompressor().decompress(b)),
    "lz4": (lz4.frame.compress, lz4.frame.decompress),
    "xz": (lzma.compress, lzma.decompress),
    "bz2": (bz2.compress, bz2.decompress),
    "snappy": (lambda b: bytes(cramjam.snappy.compress_raw(b)), lambda b: bytes(cramjam.snappy.decompress_raw(b))),
}


# --------------------------------------------------------------------------
# HTTP compression
# --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(CODECS))
def test_content_encoding_request_bodies(server, q, encoding):
    compress, _ = CODECS[encoding]
    table = unique(f"enc_{encoding}")
    q(f"CREATE TABLE {table} (a UInt32, s String) ENGINE=MergeTree ORDER BY a")
    rows = b"".join(f"{i}\trow {i}\n".encode() for i in range(5000))
    status, _, body = request(server.port, body=compress(rows), headers={"Content-Encoding": encoding},
                              params={"query": f"INSERT INTO {table} FORMAT TabSeparated"})
    assert status == 200, body
    assert q(f"SELECT count(), sum(a) FROM {table}") == b"5000\t12497500\n"
    # the query itself may be the compressed body too
    status, _, body = request(server.port, body=compress(b"SELECT 40 + 2"), headers={"Content-Encoding": encoding})
    assert (status, body) == (200, b"42\n")


@pytest.mark.parametrize("encoding", sorted(CODECS))
def test_accept_encoding_responses(server, encoding):
    _, decompress = CODECS[encoding]
    params = {"enable_http_compression": "1"}
    status, headers, body = request(server.port, body=b"SELECT number FROM numbers(1000)", params=params,
                                    headers={"Accept-Encoding": encoding})
    assert (status, headers["content-encoding"]) == (200, encoding)
    assert decompress(body) == b"".join(f"{i}\n".encode() for i in range(1000))


def test_response_encoding_choice_and_opt_in(server):
    # without enable_http_compression=1 the response is never encoded, as in clickhouse-server
    _, headers, body = request(server.port, body=b"SELECT 1", headers={"Accept-Encoding": "gzip, br"})
    assert ("content-encoding" not in headers, body) == (True, b"1\n")
    on = {"enable_http_compression": "1"}
    assert request(server.port, body=b"SELECT 1", params=on, headers={"Accept-Encoding": "gzip, deflate, br"})[1][
        "content-encoding"] == "br"
    assert request(server.port, body=b"SELECT 1", params=on, headers={"Accept-Encoding": "gzip, zstd;q=0"})[1][
        "content-encoding"] == "gzip"
    _, headers, body = request(server.port, body=b"SELECT 1", params=on, headers={"Accept-Encoding": "identity"})
    assert ("content-encoding" not in headers, body) == (True, b"1\n")


def test_framed_compress_with_http_encoding(server):
    """compress=1 frames the result; an HTTP encoding may wrap it again (clients then undo both)."""
    status, headers, body = request(server.port, body=b"SELECT 7", params={"compress": "1", "enable_http_compression": "1"},
                                    headers={"Accept-Encoding": "gzip"})
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert unframe(gzip.decompress(body)) == b"7\n"


def test_unknown_and_broken_content_encoding(server):
    status, headers, body = request(server.port, body=b"SELECT 1", headers={"Content-Encoding": "compress"})
    assert (status, headers["x-clickhouse-exception-code"]) == (501, "48")
    assert body.startswith(b"Code: 48. DB::Exception: Unknown compression method 'compress'.")
    for encoding in sorted(CODECS):
        status, headers, body = request(server.port, body=b"this is not compressed at all",
                                        headers={"Content-Encoding": encoding})
        assert (status, headers["x-clickhouse-exception-code"]) == (500, "271"), (encoding, body)
        assert b"(CANNOT_DECOMPRESS)" in body


def test_decompressed_size_cap_for_every_encoding(tmp_path):
    server = ServerProcess(str(tmp_path / "data"), extra_args=("--max-decompressed-bytes", str(1 << 20)))
    try:
        bomb = b"\0" * (8 << 20)
        for encoding, (compress, _) in sorted(CODECS.items()):
            status, headers, body = request(server.port, body=compress(b"SELECT 1 -- " + bomb),
                                            headers={"Content-Encoding": encoding})
            assert (status, headers["x-clickhouse-exception-code"]) == (413, "229"), (encoding, body)
            assert b"exceeds the limit of 1048576 bytes (--max-decompressed-bytes)" in body
        status, headers, body = request(server.port, body=frame_block(bomb[: 1 << 20]) * 2, params={"decompress": "1"})
        assert (status, headers["x-clickhouse-exception-code"]) == (413, "229")
        # under the cap, all is well
        status, _, body = request(server.port, body=gzip.compress(b"SELECT 1 -- " + bomb[:1000]),
                                  headers={"Content-Encoding": "gzip"})
        assert (status, body) == (200, b"1\n")
    finally:
        server.kill()


# --------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------


def test_session_keeps_settings_database_and_temporary_tables(server, q):
    sid = str(uuid.uuid4())
    db = unique("sess")
    q(f"CREATE DATABASE {db}")
    q("SET max_threads = 1", session_id=sid)
    q(f"USE {db}", session_id=sid)
    q("CREATE TEMPORARY TABLE scratch (a UInt8)", session_id=sid)
    q("INSERT INTO scratch VALUES (5)", session_id=sid)
    assert q("SELECT getSetting('max_threads'), currentDatabase(), sum(a) FROM scratch", session_id=sid) == (
        f"1\t{db}\t5\n".encode()
    )
    # URL settings and database apply to one query of the session only
    assert q("SELECT getSetting('max_threads'), currentDatabase()", session_id=sid, max_threads="3",
             database="default") == b"3\tdefault\n"
    assert q("SELECT getSetting('max_threads'), currentDatabase()", session_id=sid) == f"1\t{db}\n".encode()
    # other sessions and sessionless requests see none of it
    assert q("SELECT getSetting('max_threads') != 1, currentDatabase()", session_id=str(uuid.uuid4())) == b"1\tdefault\n"
    status, headers, _ = request(server.port, body=b"SELECT * FROM scratch")
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "60")


def test_sessionless_temporary_table_does_not_leak(server, q):
    q("CREATE TEMPORARY TABLE leak_check (a UInt8)")
    for _ in range(3):  # whichever pooled engine session answers
        status, headers, _ = request(server.port, body=b"SELECT * FROM leak_check")
        assert (status, headers["x-clickhouse-exception-code"]) == (404, "60")


def test_session_errors(server, q):
    status, headers, body = request(server.port, body=b"SELECT 1", params={"session_id": "nope", "session_check": "1"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "372")
    assert body.startswith(b"Code: 372. DB::Exception: Session nope not found. (SESSION_NOT_FOUND)")
    status, headers, _ = request(server.port, body=b"SELECT 1", params={"session_id": "x", "session_timeout": "4000"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "374")
    sid = str(uuid.uuid4())
    busy = threading.Thread(target=lambda: request(server.port, body=b"SELECT sleep(1)", params={"session_id": sid}))
    busy.start()
    time.sleep(0.3)
    status, headers, body = request(server.port, body=b"SELECT 1", params={"session_id": sid})
    busy.join()
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "373"), body
    assert b"(SESSION_IS_LOCKED)" in body
    assert request(server.port, body=b"SELECT 1", params={"session_id": sid, "session_check": "1"})[0] == 200


def test_session_expires_after_its_timeout(server, q):
    sid = str(uuid.uuid4())
    q("SET max_threads = 1", session_id=sid, session_timeout="1")
    time.sleep(2.2)
    status, headers, _ = request(server.port, body=b"SELECT 1", params={"session_id": sid, "session_check": "1"})
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "372")


# --------------------------------------------------------------------------
# Headers, query ids, parameters, external data
# --------------------------------------------------------------------------


def test_request_headers_format_and_database(server, q):
    db = unique("hdr")
    q(f"CREATE DATABASE {db}")
    status, headers, body = request(server.port, body=b"SELECT currentDatabase() AS d",
                                    headers={"X-ClickHouse-Format": "JSONEachRow", "X-ClickHouse-Database": db})
    assert (status, body) == (200, f'{{"d":"{db}"}}\n'.encode())
    assert headers["x-clickhouse-format"] == "JSONEachRow"


def test_response_headers_summary_progress_query_id(server, q):
    table = unique("sum")
    q(f"CREATE TABLE {table} (a UInt32) ENGINE=MergeTree ORDER BY a")
    params = {"query": f"INSERT INTO {table} FORMAT TabSeparated", "query_id": "qid-1", "wait_end_of_query": "1",
              "send_progress_in_http_headers": "1"}
    status, headers, _ = request(server.port, body=b"1\n2\n3\n", params=params)
    assert status == 200
    assert headers["x-clickhouse-query-id"] == "qid-1"
    assert json.loads(headers["x-clickhouse-summary"])["written_rows"] == "3"
    assert json.loads(headers["x-clickhouse-progress"])["written_rows"] == "3"
    _, headers, _ = request(server.port, body=f"SELECT * FROM {table}".encode())
    assert "x-clickhouse-progress" not in headers
    assert json.loads(headers["x-clickhouse-summary"])["read_rows"] == "3"


def test_same_query_id_twice_at_once(server):
    slow = threading.Thread(target=lambda: request(server.port, body=b"SELECT sleep(1)", params={"query_id": "dup"}))
    slow.start()
    time.sleep(0.3)
    status, headers, body = request(server.port, body=b"SELECT 1", params={"query_id": "dup"})
    slow.join()
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "216"), body
    assert request(server.port, body=b"SELECT 1", params={"query_id": "dup"})[0] == 200


def test_roles_are_not_supported(server):
    status, headers, body = request(server.port, body=b"SELECT 1", params={"role": "admin"})
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "511")
    assert body.startswith(b"Code: 511. DB::Exception: There is no role `admin` (this dev server has no roles). (UNKNOWN_ROLE)")


def test_identifier_parameters(server, q):
    table = unique("ident")
    q(f"CREATE TABLE {table} (a UInt8) ENGINE=Memory")
    q(f"INSERT INTO {table} VALUES (9)")
    assert q("SELECT a FROM {t:Identifier} WHERE a = {v:UInt8}", param_t=table, param_v="9") == b"9\n"


def _multipart(parts: dict[str, bytes]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, data in parts.items()
    ) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_external_data(server, q):
    content_type, body = _multipart({"ext": b"1\tone\n2\ttwo\n", "nums": b"10,20\n30,40\n"})
    params = {"query": "SELECT (SELECT sum(a) FROM ext), (SELECT groupArray(s) FROM ext), (SELECT sum(_1 + _2) FROM nums)",
              "ext_structure": "a UInt32, s String", "nums_types": "UInt8,UInt16", "nums_format": "CSV"}
    status, _, data = request(server.port, body=body, params=params, headers={"Content-Type": content_type})
    assert (status, data) == (200, b"3\t['one','two']\t100\n")
    # the temporary tables lived for that query only
    status, headers, _ = request(server.port, body=b"SELECT * FROM ext")
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "60")
    content_type, body = _multipart({"bare": b"1\n"})
    status, headers, data = request(server.port, body=body, params={"query": "SELECT * FROM bare"},
                                    headers={"Content-Type": content_type})
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "36")
    assert b"Use fields bare_structure or bare_types" in data
    status, headers, _ = request(server.port, body=body, params={"query": "SELECT 1", "bare_structure": "a String) ENGINE=File(CSV"},
                                 headers={"Content-Type": content_type})
    assert (status, headers["x-clickhouse-exception-code"]) == (400, "36")
    content_type, body = _multipart({"v": b"(file('/etc/passwd'))"})  # Values evaluates expressions
    status, headers, _ = request(server.port, body=body, params={"query": "SELECT * FROM v", "v_structure": "s String",
                                                                 "v_format": "Values"},
                                 headers={"Content-Type": content_type})
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "497")


# --------------------------------------------------------------------------
# Concurrency: reads run beside inserts
# --------------------------------------------------------------------------

_LONG_INSERT = "INSERT INTO {t} SELECT number FROM numbers(4) WHERE sleepEachRow(0.5) = 0"  # 2 s


def _timed(port, sql, results, key, **params):
    started = time.monotonic()
    status, _, body = request(port, body=sql.encode(), params=params)
    results[key] = (status, body, time.monotonic() - started)


def test_read_during_long_insert_answers_at_once(server, q):
    table = unique("long")
    q(f"CREATE TABLE {table} (a UInt64) ENGINE=MergeTree ORDER BY a")
    results = {}
    writer = threading.Thread(target=_timed, args=(server.port, _LONG_INSERT.format(t=table), results, "insert"))
    writer.start()
    time.sleep(0.3)
    _timed(server.port, f"SELECT count() FROM {table}", results, "read")
    writer.join()
    assert results["insert"][0] == 200 and results["insert"][2] >= 1.9
    assert results["read"][:2] == (200, b"0\n")  # answered before the insert finished
    assert results["read"][2] < 1.0  # the insert had 1.7 s to go


def test_queued_inserts_do_not_starve_reads(tmp_path):
    """Two slots: one write at a time, the other slot stays for reads, however many inserts queue."""
    server = ServerProcess(str(tmp_path / "data"), extra_args=("--max-concurrent-queries", "2"))
    try:
        table = unique("queue")
        post(server.port, f"CREATE TABLE {table} (a UInt64) ENGINE=MergeTree ORDER BY a", None, {})
        results = {}
        writers = [threading.Thread(target=_timed, args=(server.port, _LONG_INSERT.format(t=table), results, f"w{i}"))
                   for i in range(3)]
        for writer in writers:
            writer.start()
            time.sleep(0.05)
        time.sleep(0.3)
        _timed(server.port, "SELECT 1", results, "read")
        for writer in writers:
            writer.join()
        assert results["read"][:2] == (200, b"1\n")
        assert results["read"][2] < 1.0  # the queued writes had 5.5 s to go
        took = sorted(results[f"w{i}"][2] for i in range(3))
        assert took[0] >= 1.9 and took[1] >= 3.9 and took[2] >= 5.9, took  # the writes took turns
    finally:
        server.kill()


def test_concurrent_reads_overlap(server):
    results = {}
    threads = [threading.Thread(target=_timed, args=(server.port, "SELECT sleep(1)", results, i)) for i in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i][0] == 200 for i in range(4))
    assert time.monotonic() - started < 2.5  # serialised, they would take 4 s


def test_chunked_body_with_encoding(server, q):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    payload = gzip.compress(b"SELECT 99")
    conn.request("POST", "/?" + urllib.parse.urlencode({}), body=iter([payload[:5], payload[5:]]),
                 headers=dict(AUTH, **{"Content-Encoding": "gzip"}), encode_chunked=True)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"99\n")
    conn.close()
