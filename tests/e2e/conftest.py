"""Fixtures for end-to-end tests: a `stack` that is always torn down. When a test fails, its
report carries the logs of every Envoy and collector still running — for a stack shared by a
module, only what they logged while that test ran — so each failure shows its own logs and a
passing run shows none."""
import pytest

from helpers import harness
from helpers.harness import Stack

_LOG_MARKS = pytest.StashKey[dict]()


def _mark_logs(item):
    """Remembers where each open stack's logs end as a phase (setup, call) starts."""
    item.stash[_LOG_MARKS] = {id(s): s.log_marks() for s in Stack.open_stacks}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _mark_logs(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _mark_logs(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or call.when == "teardown":
        return
    marks = item.stash.get(_LOG_MARKS, {})
    for stack in Stack.open_stacks:
        logs = stack.logs(since=marks.get(id(stack)))
        if logs:
            rep.sections.append((f"logs of {stack.workdir.name} ({call.when})", logs))


@pytest.fixture
def stack():
    with Stack() as s:
        yield s


@pytest.fixture
def bare_stack():
    """A stack without a collector."""
    with Stack(collector=False) as s:
        yield s


@pytest.fixture(autouse=True)
def no_envoy_crashed():
    """An Envoy that crashed during a test fails it, even if what the test checked passed (a
    filter must never take the proxy down: issue 23, "0 crashes of Envoy in the e2e suite")."""
    before = len(harness.CRASHES)
    yield
    crashed = harness.CRASHES[before:]
    assert not crashed, f"Envoy crashed: {crashed}"
