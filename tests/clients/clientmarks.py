"""The parameters of the cross-language client tests: each client's cases,
with strict xfail marks on those that fail today only because of a server bug
issue 23 is fixing.  A marked case flips to XPASS (a failure, strict) when the
fix lands; the mark is then removed (item 3's, the refused long multi-get
lines, are gone).  Item 2, the binary quiet-get stall, failed no check: it
cost libmemcached clients time, which scripts/client_timings.py shows."""

from __future__ import annotations

import pytest

from stig_testkit import clients

ITEM_1 = (
    "issue 23 item 1: pipelined writes answered after their commit are committed "
    "one by one (1,000 in a burst take ~0.8 s)"
)


def cases(spec: clients.ClientSpec, **xfail: str) -> list[object]:
    """``spec``'s cases as parameters; ``case=reason`` marks one strict xfail."""
    unknown = set(xfail) - set(spec.cases)
    assert not unknown, f"{spec.name} has no case {unknown}"
    return [
        pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=xfail[case]))
        if case in xfail
        else case
        for case in spec.cases
    ]
