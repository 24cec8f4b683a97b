"""The error every `obol` command reports as a one-line (or log-tail) message, not a trace."""


class ObolCliError(Exception):
    """A failure the user can act on; its message says what happened and where to look."""
