"""Helpers for the dev ClickHouse server's tests: a server subprocess, raw HTTP requests, and
ClickHouse LZ4 framing and RowBinary written independently of the server's, so that a codec
bug cannot agree with itself."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import uuid

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server.py")
USER = "default"
PASSWORD = "s3cret"
AUTH = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}


# --------------------------------------------------------------------------
# Server process helpers
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: str, password: str = PASSWORD, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = os.path.join(os.path.dirname(data_dir), f"server-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--port", str(self.port), "--data-dir", data_dir, "--password", password, *extra_args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {open(self.log_path).read()}")
            try:
                if request(self.port, "GET", "/ping", auth=False)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def request(port, method="POST", path="/", body=None, params=None, headers=None, auth=True, conn=None):
    """One HTTP request; returns (status, headers dict with lower-case names, body bytes)."""
    url = path + ("?" + urllib.parse.urlencode(params) if params else "")
    all_headers = dict(AUTH if auth else {}, **(headers or {}))
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, url, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            conn.close()


def post(port, sql, body, params):
    if body is None:
        status, headers, data = request(port, body=sql.encode(), params=params)
    else:
        status, headers, data = request(port, body=body, params=dict(params, query=sql))
    assert status == 200, data.decode(errors="replace")
    return status, headers, data


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------
# Independent ClickHouse LZ4 framing and RowBinary helpers
# --------------------------------------------------------------------------


def frame_block(raw: bytes, method: int = 0x82) -> bytes:
    payload = lz4.block.compress(raw, store_size=False) if method == 0x82 else raw
    header = bytes([method]) + struct.pack("<I", 9 + len(payload)) + struct.pack("<I", len(raw))
    value = CityHash128(header + payload)
    checksum = (value >> 64).to_bytes(8, "little") + (value & (2**64 - 1)).to_bytes(8, "little")
    return checksum + header + payload


def unframe(data: bytes) -> bytes:
    out, pos = b"", 0
    while pos < len(data):
        size, raw_size = struct.unpack_from("<II", data, pos + 17)
        block = data[pos + 16:pos + 16 + size]
        value = CityHash128(block)
        assert data[pos:pos + 16] == (value >> 64).to_bytes(8, "little") + (value & (2**64 - 1)).to_bytes(8, "little")
        assert block[0] == 0x82
        out += lz4.block.decompress(block[9:], uncompressed_size=raw_size)
        pos += 16 + size
    return out


def rb_string(value: str) -> bytes:
    raw = value.encode()
    assert len(raw) < 128
    return bytes([len(raw)]) + raw
