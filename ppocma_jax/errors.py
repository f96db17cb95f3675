"""Errors the entry points report as one line (a leaf module: it imports nothing from the package, so the CLI,
the host loop and the evaluate command can all raise them without importing each other)."""

from __future__ import annotations


class CliError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class RunFailure(Exception):
    """The run could not go on (a failed write): one line, exit code 1; the directory resumes."""
