"""`python -m tower` is the `tower` command."""

from tower.cli.main import entry

entry()
