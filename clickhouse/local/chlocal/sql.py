"""Just enough of ClickHouse's lexer to split INSERT data, find FORMAT clauses, classify
statements for readonly, and refuse features that reach outside the data directory.

The lexer follows ClickHouse's (src/Parsers/Lexer.cpp) where it matters for safety:
nested ``/* */`` comments, ``--`` and ``# ``/``#!`` line comments, heredocs
``$tag$...$tag$``, strings and quoted identifiers with backslash escapes and doubled
quotes. A construct the engine would reject as a lexing error can only make the
query fail, so it needs no exact treatment here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ClickHouseError, access_denied

# Words are ASCII here. ClickHouse also skips Unicode whitespace (U+00A0 and the like) between
# tokens, so every non-ASCII byte outside a literal counts as whitespace: `file\u00a0(` is
# still file followed by "(". Numbers stop where ClickHouse's may go on into a word
# (`1abc` is one identifier there): splitting a token can only refuse more, never less.
_WORD_RE = re.compile(rb"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER_RE = re.compile(
    rb"0[xX][0-9A-Fa-f]+|0[bB][01]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
)
_SPACE = b" \t\n\r\f\v" + bytes(range(0x80, 0x100))
_OPERATORS = (b"==", b"!=", b"<>", b"<=", b">=", b"||", b"::", b"->", b"=>")
_HEREDOC_RE = re.compile(rb"\$([A-Za-z0-9_]*)\$")


@dataclass
class Token:
    kind: str  # word, quoted_id, string, heredoc, number, op
    text: bytes  # as written (for word: upper-cased in .upper)
    start: int
    end: int
    depth: int  # parenthesis depth before this token

    @property
    def upper(self) -> bytes:
        return self.text.upper()

    @property
    def name(self) -> str:
        """The identifier (unquoted) for word and quoted_id tokens."""
        if self.kind == "quoted_id":
            return _unquote(self.text)
        return self.text.decode("utf-8", "replace")


def _unquote(text: bytes) -> str:
    quote = text[:1]
    inner = text[1:-1]
    out = re.sub(rb"\\(.)|" + re.escape(quote * 2), lambda m: m.group(1) if m.group(1) is not None else quote, inner, flags=re.S)
    return out.decode("utf-8", "replace")


def _quoted_end(sql: bytes, pos: int) -> int:
    """End of the quoted literal starting at ``pos`` (escapes: backslash, doubled quote)."""
    quote = sql[pos]
    i = pos + 1
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == 0x5C:  # backslash
            i += 2
        elif c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n  # unterminated: the engine reports it


def _block_comment_end(sql: bytes, pos: int) -> int:
    depth = 0
    i = pos
    n = len(sql)
    while i < n:
        if sql.startswith(b"/*", i):
            depth += 1
            i += 2
        elif sql.startswith(b"*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def tokens(sql: bytes, stop: int | None = None):
    """Significant tokens of ``sql`` (comments and whitespace skipped)."""
    n = len(sql) if stop is None else min(stop, len(sql))
    i = 0
    depth = 0
    while i < n:
        c = sql[i]
        if c in _SPACE:
            i += 1
            continue
        if sql.startswith(b"--", i) or (c == 0x23 and i + 1 < len(sql) and sql[i + 1] in b" !"):
            j = sql.find(b"\n", i)
            i = len(sql) if j < 0 else j + 1
            continue
        if sql.startswith(b"/*", i):
            i = _block_comment_end(sql, i)
            continue
        start = i
        if c in b"'\"`":
            i = _quoted_end(sql, i)
            kind = "string" if c == 0x27 else "quoted_id"
        elif c == 0x24 and (m := _HEREDOC_RE.match(sql, i)) and (close := sql.find(m.group(), m.end())) >= 0:
            i = close + len(m.group())
            kind = "heredoc"
        elif m := _WORD_RE.match(sql, i):
            i = m.end()
            kind = "word"
        elif m := _NUMBER_RE.match(sql, i):
            i = m.end()
            kind = "number"
        else:
            op = next((o for o in _OPERATORS if sql.startswith(o, i)), None)
            i += len(op) if op else 1
            kind = "op"
        text = sql[start:i]
        yield Token(kind, text, start, i, depth)
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1


def first_verb(sql: bytes) -> bytes:
    """The statement's leading keyword (e.g. b"SELECT"), b"" if none."""
    for token in tokens(sql):
        if token.kind == "word":
            return token.upper
        if token.text != b"(":
            return b""
    return b""


@dataclass
class InsertWithData:
    """``INSERT INTO t [(cols)] [SETTINGS ...] FORMAT X`` followed by raw data."""

    head: bytes
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
    stream = tokens(sql)
    for token in stream:
        if token.kind != "word" or token.depth != 0:
            continue
        if token.upper in (b"VALUES", b"SELECT", b"WITH"):
            return None
        if token.upper == b"FORMAT":
            fmt = next(stream, None)
            if fmt is None or fmt.kind != "word":
                return None
            return InsertWithData(sql[:token.start], fmt.text.decode(), sql[_data_start(sql, fmt.end):])
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
    for token in tokens(sql):
        if token.kind == "word" and token.depth == 0 and previous == b"FORMAT":
            found = token.text.decode()
        previous = token.upper if token.kind == "word" else None
    return found


# --------------------------------------------------------------------------
# Features HTTP clients may not use
# --------------------------------------------------------------------------

# Table functions, table/database engines and dictionary sources that read or write
# files, the network or other servers (lower-cased), and the scalar function file().
_REFUSED_FUNCTIONS = {
    "file", "filecluster", "url", "urlcluster", "remote", "remotesecure", "cluster", "clusterallreplicas",
    "gcs", "oss", "cosn", "cos", "hive", "odbc", "jdbc", "sqlite", "redis", "executable", "executablepool",
    "kafka", "rabbitmq", "nats", "filelog", "distributed", "filesystem", "backup", "disk", "http", "https",
    "clickhouse", "cassandra", "yamlregexptree", "embeddedrocksdb", "keepermap", "zookeeper", "datalakecatalog",
}
_REFUSED_PREFIXES = (
    "s3", "hdfs", "azure", "iceberg", "deltalake", "hudi", "paimon", "mysql", "postgres", "materializedpostgresql",
    "materializedmysql", "mongo", "arrowflight", "ytsaurus", "prometheus",
)
# Settings that name files (or schema registries) the engine would read or write, and the
# dialect (another dialect's syntax is not what the lexer here checks).
REFUSED_SETTINGS = {
    "format_schema", "format_template_resultset", "format_template_row", "output_format_schema",
    "format_avro_schema_registry_url", "format_schema_source", "dialect",
}
# Statements that read or write outside the data directory, or stop the engine.
_REFUSED_VERBS = {b"BACKUP", b"RESTORE"}
_SYSTEM_ALLOWED = {b"FLUSH", b"SYNC", b"DROP", b"STOP", b"START", b"WAIT"}


# In these statements a name after these words is a table, view or dictionary being named
# (CREATE TABLE url (...), INSERT INTO file (col)): checked against the engine, a table
# function cannot stand there (INSERT INTO FUNCTION file(...) is still refused). Elsewhere
# it can: DESCRIBE TABLE file(...) reads the file.
_NAMING_VERBS = {b"CREATE", b"ATTACH", b"INSERT", b"REPLACE"}
_OBJECT_NAME_AFTER = {b"TABLE", b"INTO", b"DICTIONARY", b"VIEW", b"EXISTS", b"."}


def _refused_function(name: str) -> bool:
    lowered = name.lower()
    return lowered in _REFUSED_FUNCTIONS or lowered.startswith(_REFUSED_PREFIXES)


def check_allowed(sql: bytes) -> None:
    """Refuse what an HTTP client may not do here: see docs/local-stack.md.

    A function, table function, engine or dictionary source is a name (bare or
    quoted) directly followed by ``(``, which a column or table name never is in
    the places those go; names inside strings and comments are not tokens.
    """
    toks = list(tokens(sql))
    verb = next((t.upper for t in toks if t.kind == "word"), b"")
    if verb in _REFUSED_VERBS:
        raise access_denied(f"{verb.decode()} is not allowed over HTTP on this dev server (it reads or writes files)")
    if verb == b"SYSTEM":
        what = next((t.upper for t in toks[1:] if t.kind == "word"), b"")
        if what not in _SYSTEM_ALLOWED:
            raise access_denied(f"SYSTEM {what.decode()} is not allowed over HTTP on this dev server")
    for i, token in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if token.kind in ("word", "quoted_id") and nxt is not None:
            before = toks[i - 1].upper if i else b""
            naming = verb in _NAMING_VERBS and before in _OBJECT_NAME_AFTER
            if nxt.text == b"(" and not naming and _refused_function(token.name):
                raise access_denied(
                    f"{token.name}() reads or writes outside the database (files, URLs, other servers) and is "
                    "not allowed over HTTP on this dev server"
                )
            if nxt.text == b"=" and token.name.lower() in REFUSED_SETTINGS:
                raise access_denied(f"Setting {token.name} is not allowed over HTTP on this dev server (it names files or changes the SQL dialect)")
        if token.kind == "word" and nxt is not None and nxt.kind == "word":
            pair = (token.upper, nxt.upper)
            follows = toks[i + 2] if i + 2 < len(toks) else None
            if pair in ((b"INTO", b"OUTFILE"), (b"FROM", b"INFILE")) and follows is not None and follows.kind == "string":
                raise access_denied(f"{pair[0].decode()} {pair[1].decode()} is not allowed over HTTP on this dev server")
        if verb == b"ATTACH" and token.upper == b"FROM" and nxt is not None and nxt.kind == "string":
            raise access_denied("ATTACH ... FROM 'path' is not allowed over HTTP on this dev server")


# Any of the refused names, anywhere (a fast pre-check of insert data before lexing it).
_REFUSED_NAME_RE = re.compile(
    b"|".join(re.escape(name.encode()) for name in sorted(_REFUSED_FUNCTIONS | set(_REFUSED_PREFIXES))), re.I
)


def check_insert_data(fmt: str, data: bytes) -> None:
    """The Values format evaluates expressions in its data (input_format_values_interpret_expressions):
    ``INSERT INTO t FORMAT Values (file('/etc/passwd'))`` would read the file. Other formats hold no
    expressions."""
    if fmt.lower() == "values" and _REFUSED_NAME_RE.search(data):
        check_allowed(data)


# --------------------------------------------------------------------------
# readonly, as clickhouse-server defines it
# --------------------------------------------------------------------------

_READ_VERBS = {b"SELECT", b"WITH", b"SHOW", b"DESCRIBE", b"DESC", b"EXISTS", b"EXPLAIN", b"USE"}


def settings_in_query(sql: bytes) -> list[str]:
    """Names a SET statement or a SETTINGS clause changes."""
    names = []
    toks = list(tokens(sql))
    in_settings = False
    for i, token in enumerate(toks):
        if token.kind == "word" and token.upper in (b"SET", b"SETTINGS") and (i == 0 or token.upper == b"SETTINGS"):
            in_settings = True
            continue
        if in_settings and token.kind in ("word", "quoted_id") and i + 1 < len(toks) and toks[i + 1].text == b"=":
            names.append(token.name)
    return names


def check_readonly(sql: bytes, level: int, user: str) -> None:
    """readonly=1: only reads, no setting changes; readonly=2: reads and settings, but not readonly."""
    verb = first_verb(sql)
    is_set = verb == b"SET"
    if split_insert(sql) is not None or (verb not in _READ_VERBS and not is_set):
        raise ClickHouseError(164, "READONLY", f"{user}: Cannot execute query in readonly mode")
    for name in settings_in_query(sql):
        check_setting_change(name, level)


def check_setting_change(name: str, level: int) -> None:
    if level == 1 or name.lower() == "readonly":
        raise ClickHouseError(164, "READONLY", f"Cannot modify '{name}' setting in readonly mode")
