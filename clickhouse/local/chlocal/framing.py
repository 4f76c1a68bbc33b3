"""ClickHouse's own compressed-block framing, as ``decompress=1`` / ``compress=1`` use it.

A block is a CityHash128 checksum (16 bytes), then method (1 byte), compressed size
including this 9-byte header and uncompressed size (little-endian UInt32 each), then
the payload. Methods: 0x82 LZ4, 0x02 none (what clients send; ZSTD 0x90 is accepted too).
"""

from __future__ import annotations

import struct

import lz4.block
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

from .errors import ClickHouseError, cannot_decompress, too_large

_LZ4 = 0x82
_ZSTD = 0x90
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


def decompress_frames(data: bytes, limit: int) -> bytes:
    """Undo ClickHouse block framing; verifies every block's checksum.

    ``limit`` caps the total uncompressed size, checked from each block's header
    before the block is decompressed.
    """
    out = []
    pos = 0
    total = 0
    while pos < len(data):
        if len(data) - pos < 16 + _HEADER.size:
            raise cannot_decompress("Cannot decompress: truncated compressed block header")
        expected = data[pos:pos + 16]
        method, size, raw_size = _HEADER.unpack_from(data, pos + 16)
        block = data[pos + 16:pos + 16 + size]
        if size < _HEADER.size or len(block) != size:
            raise cannot_decompress("Cannot decompress: truncated compressed block")
        actual = _checksum(block)
        if actual != expected:
            raise ClickHouseError(
                40,
                "CHECKSUM_DOESNT_MATCH",
                f"Checksum doesn't match: corrupted data. Reference: {expected.hex()}. "
                f"Actual: {actual.hex()}. Size of compressed block: {size}",
            )
        total += raw_size
        if total > limit:
            raise too_large(f"Decompressed request body exceeds the limit of {limit} bytes (--max-decompressed-bytes)")
        out.append(_decompress_block(method, block[_HEADER.size:], raw_size))
        pos += 16 + size
    return b"".join(out)


def _decompress_block(method: int, payload: bytes, raw_size: int) -> bytes:
    if method == _NONE:
        return payload
    try:
        if method == _LZ4:
            return lz4.block.decompress(payload, uncompressed_size=raw_size)
        if method == _ZSTD:
            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_size)
    except (lz4.block.LZ4BlockError, zstandard.ZstdError) as exc:
        raise cannot_decompress(f"Cannot decompress block (method {method:#x}): {exc}") from exc
    raise cannot_decompress(f"Unknown compression method: {method:#x}")
