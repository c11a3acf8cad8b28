"""The command groups of ``promomail``, one module per group or concern.

Each module defines click commands and imports only what they need; the
root group in :mod:`cli` imports a module when one of its commands runs.

A module is also imported to complete its commands' options in a shell, on
every Tab: so it imports the library inside the command functions, and
declares its options with plain constants (:mod:`pools.choices`,
:mod:`templating.choices`). tests/cli/test_cli_lazy.py checks that completing a
command or an option imports no library code.
"""
