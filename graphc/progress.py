"""Progress bars for work that can take more than a few seconds (training, search, checks).

    from graphc.progress import progress, bar

    for batch in progress(loader, total=len(loader), desc="epoch 1", quiet=ctx.quiet):
        ...
    with bar(total=steps, desc="search", quiet=ctx.quiet) as b:
        b.update(1); b.set_postfix(loss=0.3)

Invariants: a bar draws only on stderr and only when stderr is a terminal, ``quiet`` is false
and ``GRAPHC_PROGRESS`` is not ``0``/``never`` (``always`` forces one, for demos); otherwise
``progress`` hands back the iterable itself and ``bar`` a no-op object, so callers never branch.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def enabled(quiet: bool = False) -> bool:
    """Whether a bar would draw right now."""
    mode = os.environ.get("GRAPHC_PROGRESS", "").lower()
    if quiet or mode in ("0", "never", "off"):
        return False
    if mode in ("1", "always", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None, *,
             quiet: bool = False, unit: str = "it", leave: bool = False) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar when one should draw, else ``iterable`` unchanged."""
    if not enabled(quiet):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)


class _Silent:
    """Stands in for a tqdm bar when none draws."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def write(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int | None = None, desc: str | None = None, *, quiet: bool = False, unit: str = "it",
        leave: bool = False):
    """A bar updated by hand (``update``, ``set_postfix``); usable as a context manager."""
    if not enabled(quiet):
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)
