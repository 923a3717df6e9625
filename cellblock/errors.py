"""Errors caused by the user's input, reported as one clear line (no traceback).

Each names the offending file, key or field. Scripts catch ``UserError`` at the
edge (``cellblock.cli.run``) and exit non-zero with the message.
"""

__all__ = ["ConfigError", "CorruptDataError", "UserError"]


class UserError(ValueError):
    """Bad input: a file, table, key or value the user can fix."""


class ConfigError(UserError):
    """A configuration key or value is unknown or invalid."""


class CorruptDataError(UserError):
    """Stored bytes fail their checksum or do not decode: a damaged file or copy.

    The message names the store and the place in it (plate, well, site) and says how
    to get intact data back (re-fetch, repack or re-predict).
    """
