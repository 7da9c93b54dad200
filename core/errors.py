"""Errors that describe a problem with the user's input rather than a bug.

The entry points (train.py, evaluate.py, restore.py) print these as one clear message, without a traceback,
and exit with status 2. Every message names the file or setting at fault and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user: a setting, a file or a folder. The message says what and how to fix it."""


class DataError(UserError):
    """A dataset folder, image file or data setting that cannot be used as given."""


class ConfigError(UserError):
    """A configuration value that is missing, inconsistent or out of range."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, unreadable or of the wrong kind."""
