"""Reliability suite: every failure a study meets, injected on purpose.

Counters of inputs tried and faults injected are collected across the suite and, with
``--reliability-report FILE``, written as JSON (the figures in RELIABILITY.md).
Long fuzzing: ``--fuzz-examples 2000``.
"""

import json
from collections import Counter

import pytest

COUNTS: Counter = Counter()


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=60, help="hypothesis examples per fuzz test")
    parser.addoption("--reliability-report", default=None, help="write the suite's counters as JSON here")


@pytest.fixture
def counts():
    return COUNTS


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--reliability-report", default=None)
    if path and COUNTS:
        with open(path, "w") as f:
            json.dump(dict(sorted(COUNTS.items())), f, indent=2)
