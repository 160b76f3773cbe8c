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


def require(module: str, feature: str, extra: str, package: str | None = None):
    """Import an optional dependency, or raise a one-line ``UserError`` naming the ``pip install`` that fixes it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = package or module.split(".")[0]
        raise UserError(
            f'{feature} needs {package}, which is not installed; pip install {package} (or pip install -e ".[{extra}]")'
        ) from None
