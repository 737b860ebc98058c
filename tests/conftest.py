"""Shared fixtures: tiny synthetic configurations that train in about a second on a CPU."""

from __future__ import annotations

import pytest
from helpers import TINY, tiny_raw  # noqa: F401

from fedunet import config


@pytest.fixture
def tiny_cfg():
    def make(**sections) -> dict:
        return config.validate(tiny_raw(**sections))

    return make
