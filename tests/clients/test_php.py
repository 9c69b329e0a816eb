"""php-memcached (libmemcached) against a real Stig server, in text and in
binary mode, and PHP's session handler (``session.save_handler=memcached``)
over it.  The script is tests/clients/php/cases.php; .ci/run installs Debian's
php-cli and php-memcached."""

from __future__ import annotations

import pytest
from clientmarks import cases

from stig_testkit.clients import PHP_BINARY, PHP_TEXT
from stig_testkit.faulty import faulty_servers

#: Cases run against ``stig serve --ttl-policy ignore``.
TTL_IGNORED = {"session_ttl_ignored"}


def server_for(case, stig_factory):
    return stig_factory("--ttl-policy", "ignore") if case in TTL_IGNORED else stig_factory()


@pytest.mark.parametrize("case", cases(PHP_TEXT))
def test_php_text(stig_factory, run_client, case):
    run_client(PHP_TEXT, server_for(case, stig_factory), case)


@pytest.mark.parametrize("case", cases(PHP_BINARY))
def test_php_binary(stig_factory, run_client, case):
    run_client(PHP_BINARY, server_for(case, stig_factory), case)


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    yield from faulty_servers(tmp_path, monkeypatch)


def test_php_binary_buffered_sets_outlast_slow_commits(faulty, run_client):
    """1,000 buffered binary sets and a get with every commit 100 ms longer,
    as on a loaded box (issue 20: the batch case failed under load).  A
    binary Set answers after its commit; libmemcached reads the replies due
    at its watermark (500) with a fixed 50 ms window and aborts PHP on an
    assertion when one is later: the case raises the watermarks (cases.php,
    ``buffered_sets``).  Seen aborting without them."""
    server = faulty()
    server.set_fault("slow 0.1")
    run_client(PHP_BINARY, server, "buffered")
