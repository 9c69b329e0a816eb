"""php-memcached (libmemcached) against a real Stig server, in text and in
binary mode, and PHP's session handler (``session.save_handler=memcached``)
over it.  The script is tests/clients/php/cases.php; .ci/run installs Debian's
php-cli and php-memcached."""

from __future__ import annotations

import pytest
from clientmarks import cases

from stig_testkit.clients import PHP_BINARY, PHP_TEXT

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
