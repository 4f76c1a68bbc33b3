"""Errors in ClickHouse's wire shape: ``Code: N. DB::Exception: ... (NAME) (version V)``."""

from __future__ import annotations

import re

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# numbers from errorCodeToName() of the engine.
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_* (TEXT, ESCAPE_SEQUENCE, QUOTED_STRING, DATE,
    # DATETIME, NUMBER, DOMAIN_VALUE_FROM_STRING, IPV4, IPV6, INPUT_ASSERTION_FAILED, UUID),
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE,
    # THERE_IS_NO_COLUMN, TOO_DEEP_AST, TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321),
        400,
    ),
    # UNKNOWN_TABLE, UNKNOWN_FUNCTION, UNKNOWN_IDENTIFIER, UNKNOWN_TYPE, UNKNOWN_STORAGE, UNKNOWN_DATABASE,
    # UNKNOWN_SETTING, UNKNOWN_DIRECTION_OF_SORTING, UNKNOWN_AGGREGATE_FUNCTION, UNKNOWN_FORMAT,
    # UNKNOWN_DATABASE_ENGINE, UNKNOWN_TYPE_OF_QUERY, UNKNOWN_ROLE
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    **dict.fromkeys((209, 76, 439), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}

_CODE_RE = re.compile(r"Code: (\d+)\. DB::Exception: ")


class ClickHouseError(Exception):
    """An error reported to the client in ClickHouse's wire shape."""

    def __init__(self, code: int, name: str, message: str):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException, names: dict[int, str]) -> "ClickHouseError":
        """Parse chdb's exception text, which embeds ClickHouse's own message.

        chdb sometimes nests the same exception several times ("Code: 73. ...
        Code: 73. ...") or prefixes it ("... failed: "); the innermost
        occurrence is the original one, and its message ends at " (NAME)".
        """
        text = str(exc)
        matches = list(_CODE_RE.finditer(text))
        if not matches:
            return cls(1001, "STD_EXCEPTION", text.strip())
        code = int(matches[-1].group(1))
        name = names.get(code, "UNKNOWN_EXCEPTION")
        message = text[matches[-1].end():]
        cut = message.find(f" ({name})")
        if cut >= 0:
            message = message[:cut]
        return cls(code, name, message.strip().removesuffix("."))

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()


# The errors this server raises itself, by name.
def too_large(message: str) -> ClickHouseError:
    return ClickHouseError(229, "QUERY_IS_TOO_LARGE", message)


def access_denied(message: str) -> ClickHouseError:
    return ClickHouseError(497, "ACCESS_DENIED", message)


def readonly(message: str) -> ClickHouseError:
    return ClickHouseError(164, "READONLY", message)


def not_implemented(message: str) -> ClickHouseError:
    return ClickHouseError(48, "NOT_IMPLEMENTED", message)


def cannot_decompress(message: str) -> ClickHouseError:
    return ClickHouseError(271, "CANNOT_DECOMPRESS", message)
