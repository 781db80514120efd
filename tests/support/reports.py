"""Extra sections under a failing test's report, such as the log tails of what it started.

    add_failure_report(request, lambda: proc.tail())   # in a fixture, with pytest's `request`

`pytest_runtest_makereport` is the hook that shows them; tests/conftest.py re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

__all__ = ["add_failure_report", "pytest_runtest_makereport"]

FAILURE_REPORTS = pytest.StashKey[list[Callable[[], str]]]()


def add_failure_report(request: pytest.FixtureRequest, report: Callable[[], str]) -> None:
    """Show `report()` under the test's failure (of its setup, call or teardown)."""
    request.node.stash.setdefault(FAILURE_REPORTS, []).append(report)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for make in item.stash.get(FAILURE_REPORTS, []):
            try:
                report.sections.append(("process logs", make()))
            except Exception as error:  # noqa: BLE001 - a report must not hide the failure
                report.sections.append(("process logs", f"(could not read logs: {error!r})"))
    return report
