"""Fixtures for end-to-end tests: a `stack` that is always torn down and, when a test fails,
prints the log of every Envoy it started."""
import pytest

from harness import Stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _make_stack(request, **kw):
    stack = Stack(**kw)
    yield stack
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(stack.logs())
    stack.close()


@pytest.fixture
def stack(request):
    yield from _make_stack(request)


@pytest.fixture
def bare_stack(request):
    """A stack without a collector."""
    yield from _make_stack(request, collector=False)
