"""Writing outputs: through a temporary file beside the target, renamed into place.

Invariants: a failure never leaves a partial output (the temporary file is removed); the file
that lands gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the
umask), not the ``0o600`` of :func:`tempfile.mkstemp`, so overwriting a shared ``0o644`` model
keeps it readable by others.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def umask_mode() -> int:
    """``0o666`` less the process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the umask's mode and rename it onto ``path``."""
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable, mode: str = "wb") -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then :func:`publish` it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
