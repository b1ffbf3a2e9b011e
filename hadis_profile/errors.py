"""User-facing errors, and which exit code each kind gets.

Every problem a user can cause (bad input, a tampered table, an impossible
request) is raised as a :class:`HadisError` whose message is one clear
sentence. The CLI prints that sentence and exits non-zero instead of showing a
traceback; library callers can catch the same class.

The library speaks in parameters, the command line in flags: a library
function that rejects one of its arguments raises :class:`ParameterError`
naming the Python parameter (``batch_sizes``); the CLI, which knows which flag
fed that parameter, rewrites the sentence to name the flag (``--batch-sizes``).
Only the CLI raises :class:`UsageError`.

Exit codes (documented in the README and docs/limits.md), one per kind of problem:

* 0 success;
* 1 :class:`HadisError`: the inputs are well-formed but the command cannot be
  done with them, or the environment stopped it (a model that failed to
  measure, a metric the run lacks, a full disk, a run folder another process
  is writing);
* 2 :class:`InputError` (and :class:`ParameterError`, :class:`UsageError`): the
  command line is wrong, or a file or folder it names is missing, malformed
  or beyond a documented limit (:mod:`hadis_profile.limits`);
* 3 ``resolve`` found no plan that meets the request (it prints the fallback);
* 130 interrupted (Ctrl-C); everything committed so far is kept.
"""

from __future__ import annotations

#: Exit codes of the command line, in one place.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130


class HadisError(Exception):
    """A problem with the user's input or data, explained in one sentence."""

    exit_code = EXIT_ERROR


class InputError(HadisError):
    """The caller's input is wrong: an argument value, a file it named, a malformed file."""

    exit_code = EXIT_USAGE


class ParameterError(InputError):
    """One argument of a library call is invalid.

    ``template`` is the sentence with ``{param}`` where the argument's name
    goes; ``str(error)`` names the Python parameter, :meth:`for_flag` the CLI
    flag (the CLI calls it, so messages never name a flag the caller did not use).
    """

    def __init__(self, param: str, template: str) -> None:
        self.param = param
        self.template = template if "{param}" in template else "{param}: " + template
        super().__init__(self.template.replace("{param}", param))

    def for_flag(self, flag: str) -> str:
        """The same sentence naming ``flag`` instead of the parameter."""
        return self.template.replace("{param}", flag)


class UsageError(InputError):
    """The command line itself is wrong (exit code 2, as Typer/Click use). CLI only."""
