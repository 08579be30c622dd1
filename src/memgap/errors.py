"""Typed errors. Library code raises these; only ``memgap.cli`` turns them into
messages and exit codes (STYLE.md, convention 8)."""

from __future__ import annotations


class MemgapError(Exception):
    """Base of every error memgap reports to a user as one line."""

    exit_code = 1


class UsageError(MemgapError):
    """Bad input from the user: an option, a file, a selector."""

    exit_code = 2


class PrivilegeError(MemgapError):
    """The environment needs a privilege this process does not have."""

    exit_code = 3


class EnvironmentUnavailable(MemgapError):
    """An environment cannot be used on this machine (missing tool, cgroup layout...)."""

    exit_code = 3


class EngineNotFound(MemgapError):
    """The engine binary or the model file is not installed."""

    exit_code = 3


class StoreError(MemgapError):
    """The results store cannot be opened, is of an unknown version, or refused a write."""

    exit_code = 4


class Interrupted(MemgapError):
    """Ctrl-C or SIGTERM, raised after everything the command created was cleaned up."""

    exit_code = 130
