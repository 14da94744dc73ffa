"""One exception type for bad input: the CLI prints its message as one line and exits 2."""

from __future__ import annotations


class CezsarError(Exception):
    """A user-facing error. The message names the input and what is wrong with it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
