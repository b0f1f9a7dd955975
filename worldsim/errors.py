"""Errors a person can act on. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from outside (a file, a flag, a checkpoint): the message names the field and the fix."""
