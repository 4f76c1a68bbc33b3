"""Fixtures shared by the dev ClickHouse server's tests."""

from __future__ import annotations

import pytest

from support import ServerProcess, post


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    proc = ServerProcess(str(tmp_path_factory.mktemp("ch") / "data"))
    yield proc
    proc.kill()


@pytest.fixture
def q(server):
    """Run SQL (POST) and return the body; fails the test on a non-200 answer."""

    def run(sql, body=None, **params):
        return post(server.port, sql, body, params)[2]

    return run
