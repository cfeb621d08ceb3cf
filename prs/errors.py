"""The one exception type for bad user input.

Anything raised as `UserError` reaches the command line as a single line
(`prs: error: ...`, exit code 2) instead of a traceback, so its message must name
the problem and how to fix it.
"""


class UserError(ValueError):
    """Bad input from a user: a config value, a path, a CLI argument."""
