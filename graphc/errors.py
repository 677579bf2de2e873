"""Errors graphc raises on purpose. Each carries a message meant to be shown as one line to a
user (the CLI prints ``str(err)`` and exits 2 unless ``--debug``); anything else escaping to the
CLI is a bug in graphc."""
from __future__ import annotations

import contextlib
import contextvars
import io

# Set by the CLI unless --debug: what the libraries graphc drives print is not for the user.
quiet_libraries: contextvars.ContextVar[bool] = contextvars.ContextVar("graphc_quiet_libraries", default=False)


@contextlib.contextmanager
def library_output():
    """Hold back what a library prints on stderr inside the block (torch.export prints the
    graph it failed on) when :data:`quiet_libraries` is set."""
    if not quiet_libraries.get():
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


class GraphcError(Exception):
    """Base of every error graphc raises deliberately."""

    exit_code = 2


class InputError(GraphcError):
    """Bad user input: a missing or unreadable model, a bad model spec, a bad option."""


class UnsupportedError(GraphcError):
    """A model or op graphc cannot handle (named in the message)."""


class IRError(GraphcError):
    """An IR invariant was broken. ``context`` holds the IR around the failing node."""

    def __init__(self, message: str, context: str = ""):
        super().__init__(message)
        self.context = context

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\n{self.context}" if self.context else msg


class VerifyError(IRError):
    """The verifier found a broken invariant."""


class ParseError(GraphcError):
    """Text IR or a pipeline string could not be parsed."""


class PassError(IRError):
    """A pass failed; the message names the pass and the passes before it."""


class DataError(GraphcError):
    """A pass that needs data got none, or a data spec could not be read."""
