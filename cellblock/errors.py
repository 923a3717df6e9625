"""Errors caused by the user's input, reported as one clear line (no traceback).

Each names the offending file, key or field. Scripts catch ``UserError`` at the
edge (``cellblock.cli.run``) and exit non-zero with the message.
"""

__all__ = ["ConfigError", "UserError"]


class UserError(ValueError):
    """Bad input: a file, table, key or value the user can fix."""


class ConfigError(UserError):
    """A configuration key or value is unknown or invalid."""
