"""HTTP compression as clickhouse-server does it, both ways.

Request bodies: ``Content-Encoding`` gzip, deflate (zlib stream), br, zstd, lz4 (LZ4
frame), xz, bz2 and snappy (raw snappy, as ClickHouse's SnappyReadBuffer), decoded
incrementally so the decoded size never grows past the configured cap.

Responses: with ``enable_http_compression=1``, the first of zstd, br, lz4, snappy,
gzip, deflate, xz, bz2 (clickhouse-server's preference order) that the client's
``Accept-Encoding`` lists without ``q=0``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib

import brotli
import cramjam
import lz4.frame
import zstandard

from .errors import cannot_decompress, not_implemented, too_large

_STEP = 1 << 20  # decoded bytes produced per step, so the cap is checked as output grows

SUPPORTED = ("gzip", "deflate", "br", "zstd", "lz4", "xz", "bz2", "snappy")
RESPONSE_PREFERENCE = ("zstd", "br", "lz4", "snappy", "gzip", "deflate", "xz", "bz2")


class _Cap:
    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.limit:
            raise too_large(
                f"Decompressed request body exceeds the limit of {self.limit} bytes (--max-decompressed-bytes)"
            )
        self.parts.append(piece)

    def result(self) -> bytes:
        return b"".join(self.parts)


def _stdlib_stream(decompressor, data: bytes, cap: _Cap) -> None:
    """lzma/bz2/lz4.frame decompressors: decompress(data, max_length), needs_input, eof."""
    cap.add(decompressor.decompress(data, _STEP))
    while not decompressor.eof and not decompressor.needs_input:
        cap.add(decompressor.decompress(b"", _STEP))
    if not decompressor.eof:
        raise cannot_decompress("truncated compressed body")


def _zlib(data: bytes, wbits: int, cap: _Cap) -> None:
    d = zlib.decompressobj(wbits)
    cap.add(d.decompress(data, _STEP))
    while d.unconsumed_tail:
        cap.add(d.decompress(d.unconsumed_tail, _STEP))
    if not d.eof:
        raise cannot_decompress("truncated compressed body")


def _brotli(data: bytes, cap: _Cap) -> None:
    d = brotli.Decompressor()
    cap.add(d.process(data, output_buffer_limit=_STEP))
    while not d.can_accept_more_data():
        cap.add(d.process(b"", output_buffer_limit=_STEP))
    if not d.is_finished():
        raise cannot_decompress("truncated compressed body")


def _zstd(data: bytes, cap: _Cap) -> None:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    while piece := reader.read(_STEP):
        cap.add(piece)


def _snappy(data: bytes, cap: _Cap) -> None:
    size = cramjam.snappy.decompress_raw_len(data)
    if size > cap.limit:  # known from the header, before decompressing
        raise too_large(f"Decompressed request body exceeds the limit of {cap.limit} bytes (--max-decompressed-bytes)")
    cap.add(bytes(cramjam.snappy.decompress_raw(data)))


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding``; the decoded body may not exceed ``limit`` bytes."""
    name = encoding.strip().lower()
    if name in ("", "identity", "none"):
        if len(body) > limit:
            raise too_large(f"Request body exceeds the limit of {limit} bytes (--max-decompressed-bytes)")
        return body
    cap = _Cap(limit)
    try:
        if name in ("gzip", "x-gzip"):
            _zlib(body, 16 + zlib.MAX_WBITS, cap)
        elif name == "deflate":
            _zlib(body, zlib.MAX_WBITS, cap)
        elif name == "br":
            _brotli(body, cap)
        elif name == "zstd":
            _zstd(body, cap)
        elif name == "lz4":
            _stdlib_stream(lz4.frame.LZ4FrameDecompressor(), body, cap)
        elif name == "xz":
            _stdlib_stream(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), body, cap)
        elif name == "bz2":
            _stdlib_stream(bz2.BZ2Decompressor(), body, cap)
        elif name == "snappy":
            _snappy(body, cap)
        else:
            raise not_implemented(
                f"Unknown compression method '{encoding.strip()}'. Only "
                + ", ".join(f"'{n}'" for n in SUPPORTED)
                + " are supported as Content-Encoding"
            )
    except (OSError, EOFError, zlib.error, lzma.LZMAError, brotli.error, zstandard.ZstdError, RuntimeError) as exc:
        raise cannot_decompress(f"Cannot decompress {name} request body: {exc}") from exc
    except cramjam.DecompressionError as exc:
        raise cannot_decompress(f"Cannot decompress {name} request body: {exc}") from exc
    return cap.result()


def choose_response_encoding(accept_encoding: str) -> str | None:
    """The encoding clickhouse-server would pick from ``Accept-Encoding``, None for identity."""
    offered = set()
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        quality = params.replace(" ", "").lower()
        if quality.startswith("q=") and quality[2:] in ("0", "0.0", "0.00", "0.000"):
            continue
        offered.add(name.strip().lower())
    if "x-gzip" in offered:
        offered.add("gzip")
    for name in RESPONSE_PREFERENCE:
        if name in offered:
            return name
    return None


def encode_body(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(body, 3)
    if encoding == "br":
        return brotli.compress(body, quality=4)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body)
    if encoding == "lz4":
        return lz4.frame.compress(body)
    if encoding == "xz":
        return lzma.compress(body, preset=1)
    if encoding == "bz2":
        return bz2.compress(body, compresslevel=1)
    if encoding == "snappy":
        return bytes(cramjam.snappy.compress_raw(body))
    raise ValueError(encoding)
