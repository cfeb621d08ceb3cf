"""The two exception types the command line turns into one line.

`UserError`: bad input (a config value, a path, a CLI argument); `prs: error: ...`, exit code 2.
`RunFailure`: a run that cannot go on for a reason outside the input (the disk is full, another
process trains the same run directory, a rank of a distributed run stopped answering); exit code 1.
Either message must name the problem and how to fix it, and say what was kept.
"""


class UserError(ValueError):
    """Bad input from a user: a config value, a path, a CLI argument."""


class RunFailure(RuntimeError):
    """A run stopped for a reason outside its input; what was on disk is kept."""
