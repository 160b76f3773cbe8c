"""User-facing errors: the CLIs print them as one line and exit with code 2 (``--debug`` shows the traceback)."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, ...); the message names the problem and the fix."""


class TrainingDiverged(UserError):
    """A loss or Q-value became NaN or infinite."""
