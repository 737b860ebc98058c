"""fedunet.provenance: where a number came from, also from a checkout copied without its .git."""

from __future__ import annotations

import subprocess

from fedunet import provenance


def _no_git(*args, **kwargs):
    raise OSError("git: not found")


def test_git_state_reads_the_commit_of_this_checkout(monkeypatch):
    monkeypatch.delenv("FEDUNET_GIT_COMMIT", raising=False)
    state = provenance.git_state()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert state["commit"] == head and state["dirty"] in (True, False)


def test_a_copied_checkout_names_its_commit_in_the_environment(monkeypatch):
    monkeypatch.setattr(provenance.subprocess, "run", _no_git)
    monkeypatch.delenv("FEDUNET_GIT_COMMIT", raising=False)
    assert provenance.git_state() == {"commit": None, "dirty": None}
    monkeypatch.setenv("FEDUNET_GIT_COMMIT", "0123abc")
    assert provenance.git_state() == {"commit": "0123abc", "dirty": None}  # dirty is unknown, not False


def test_the_named_commit_wins_over_a_stale_git_snapshot(monkeypatch):
    """A device machine received the working tree with the .git of an older commit: git would name
    that one (dirty); the commit named by whoever sent the code is the one that ran."""
    monkeypatch.setenv("FEDUNET_GIT_COMMIT", "7c89e30")
    assert provenance.git_state() == {"commit": "7c89e30", "dirty": None}
