"""The parameters of the cross-language client tests: each client's cases,
with a strict xfail mark on any that fails only because of a known server bug
(none today: issue 23's pipelined commits and long multi-get lines are
fixed).  A marked case flips to XPASS (a failure, strict) when its fix lands,
and the mark is then removed."""

from __future__ import annotations

import pytest

from stig_testkit import clients


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
