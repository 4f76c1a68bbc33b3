"""Multipart external data: files sent with the query, queried as temporary tables.

As clickhouse-server: a ``multipart/form-data`` POST whose parts are files named
``<name>``, described by the URL parameters ``<name>_structure`` (``"a UInt32, s String"``)
or ``<name>_types`` (``"UInt32,String"``, columns ``_1``, ``_2``...) and ``<name>_format``
(default TabSeparated). The query itself is in the ``query`` URL parameter.
"""

from __future__ import annotations

import email.parser
import email.policy
import re

from .engine import ExternalTable
from .errors import ClickHouseError
from .sql import check_allowed, tokens

_FORMAT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def is_multipart(content_type: str) -> bool:
    return content_type.strip().lower().startswith("multipart/form-data")


def external_tables(content_type: str, body: bytes, params: dict[str, str]) -> list[ExternalTable]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ClickHouseError(36, "BAD_ARGUMENTS", "Cannot parse multipart/form-data body (no boundary or no parts)")
    tables = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ClickHouseError(36, "BAD_ARGUMENTS", "A multipart part has no name in its Content-Disposition")
        tables.append(ExternalTable(name, _structure(name, params), _format(name, params), part.get_payload(decode=True) or b""))
    return tables


def _structure(name: str, params: dict[str, str]) -> str:
    if f"{name}_structure" in params:
        structure = params[f"{name}_structure"]
    elif f"{name}_types" in params:
        types = [t.strip() for t in _split_top_level(params[f"{name}_types"])]
        structure = ", ".join(f"_{i} {t}" for i, t in enumerate(types, 1))
    else:
        raise ClickHouseError(
            36, "BAD_ARGUMENTS",
            f"Neither structure nor types have not been provided for external table {name}. "
            f"Use fields {name}_structure or {name}_types to do so.",
        )
    encoded = structure.encode()
    for token in tokens(encoded):
        if token.depth < 0 or (token.depth == 0 and token.text == b")"):
            raise ClickHouseError(36, "BAD_ARGUMENTS", f"Unbalanced parentheses in the structure of external table {name}")
    check_allowed(b"(" + encoded + b")")
    return structure


def _format(name: str, params: dict[str, str]) -> str:
    fmt = params.get(f"{name}_format") or "TabSeparated"
    if not _FORMAT_RE.match(fmt):
        raise ClickHouseError(73, "UNKNOWN_FORMAT", f"Unknown format {fmt}")
    return fmt


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def external_params(tables: list[ExternalTable]) -> set[str]:
    """URL parameters that describe the external tables (not settings)."""
    return {f"{t.name}_{suffix}" for t in tables for suffix in ("structure", "types", "format")}
