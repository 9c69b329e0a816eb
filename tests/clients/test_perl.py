"""Perl clients against a real Stig server: Cache::Memcached::Fast (XS) and
Cache::Memcached (pure Perl), both text protocol.  The script is
tests/clients/perl/cases.pl; .ci/run installs Debian's
libcache-memcached-fast-perl and libcache-memcached-perl."""

from __future__ import annotations

import pytest
from clientmarks import cases

from stig_testkit.clients import CACHE_MEMCACHED, CACHE_MEMCACHED_FAST


@pytest.mark.parametrize("case", cases(CACHE_MEMCACHED_FAST))
def test_cache_memcached_fast(stig_server, run_client, case):
    run_client(CACHE_MEMCACHED_FAST, stig_server, case)


@pytest.mark.parametrize("case", cases(CACHE_MEMCACHED))
def test_cache_memcached(stig_server, run_client, case):
    run_client(CACHE_MEMCACHED, stig_server, case)
