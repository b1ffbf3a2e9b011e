"""User-facing errors.

Every problem a user can cause (bad input, a tampered table, an impossible
request) is raised as a :class:`HadisError` whose message is one clear
sentence. The CLI prints that sentence and exits non-zero instead of showing a
traceback; library callers can catch the same class.
"""

from __future__ import annotations


class HadisError(Exception):
    """A problem with the user's input or data, explained in one sentence."""

    exit_code = 1


class UsageError(HadisError):
    """The command line itself is wrong (exit code 2, as Typer/Click use)."""

    exit_code = 2
