"""Errors a user can act on."""


class SynthgenError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""
