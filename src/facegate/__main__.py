"""``python -m facegate``: the same as the ``facegate`` command."""

from facegate.cli import run

run()
