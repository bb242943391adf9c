"""The one exception a user can act on: the CLI prints it as one line and exits non-zero."""


class CurateError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""
