"""Command-line helpers shared by every script: the edge and the two value shapes.

- ``edge``: ``run(main)`` (logging; a ``UserError`` or ``OSError`` becomes one line on
  stderr and exit 1), ``writing(folder)`` (names the folder a failed write was in),
  ``option_value``.
- ``values``: ``comma_list`` and ``key_value(s)`` / ``parse_overrides`` (``--set``), the
  one parser of each shape.

Each stage's own arguments live with the stage (``training.cli``, ``blockwise.cli``,
``viewer.cli``). These modules import nothing heavier than yaml.
"""

from cellblock.cli.edge import EXIT_ERROR, describe_os_error, option_value, run, writing
from cellblock.cli.values import comma_list, key_value, key_values, parse_overrides

__all__ = [
    "EXIT_ERROR",
    "comma_list",
    "describe_os_error",
    "key_value",
    "key_values",
    "option_value",
    "parse_overrides",
    "run",
    "writing",
]
