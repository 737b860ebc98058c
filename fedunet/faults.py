"""Fault injection for the reliability suite (tests/reliability/); inert unless its variables are set.

- ``FEDUNET_FAULT_WRITE_DELAY=<seconds>``: pause inside every atomic write, after the
  temporary file is complete and before it replaces the target, so that a test can kill the
  process in the middle of a checkpoint write.
- ``FEDUNET_FAULT_FAIL=<text>``: ``fedunet train`` fails at start for any run whose name
  contains the text (a job that keeps failing, for the workflow's retry and keep-going tests).
"""

from __future__ import annotations

import os
import time


class InjectedFault(RuntimeError):
    pass


def write_delay() -> None:
    delay = os.environ.get("FEDUNET_FAULT_WRITE_DELAY")
    if delay:
        time.sleep(float(delay))


def check_injected_failure(run_name: str) -> None:
    target = os.environ.get("FEDUNET_FAULT_FAIL")
    if target and target in run_name:
        raise InjectedFault(f"injected failure for run {run_name!r} (FEDUNET_FAULT_FAIL={target!r})")
