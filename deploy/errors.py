"""The deploy tooling's error: what went wrong, and what to do about it."""

from __future__ import annotations


class DeployError(Exception):
    """A problem the operator can act on; the command line prints it without a traceback."""
