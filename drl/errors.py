"""User-facing errors: the CLIs print them as one line and exit with code 2 (``--debug`` shows the traceback)."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, ...); the message names the problem and the fix."""


class TrainingDiverged(UserError):
    """A loss or Q-value became NaN or infinite."""


def first_line(exc: BaseException, limit: int = 200, default: str | None = None) -> str:
    """The first line of ``str(exc)`` (stripped), cut to ``limit`` characters; for an empty message ``default``,
    or the exception's type name when ``default`` is None."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__ if default is None else default)[:limit]
