"""Errors that the command line reports as one clear message, without a traceback."""


class LtaugError(Exception):
    """Base class: the message names the file, row or key, what was expected and how to fix it."""


class ConfigError(LtaugError):
    """A configuration key is unknown, of the wrong type or inconsistent with another."""


class InputError(LtaugError):
    """An input file (labels CSV, image, store) is missing or does not hold what it should."""
