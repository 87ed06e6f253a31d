"""Type stubs for the reader's C loops (``_cdecode.c``); see ``_impl``."""

from collections.abc import Callable, Iterator
from typing import Any

from ._model import Event

def setup(**constants: Any) -> None: ...
def batch(
    payload: tuple[Any, ...], strings: list[str], nstacks: int, out: list[Any], /
) -> bool: ...
def sort_by_time(records: list[tuple[Any, ...]], /) -> bool: ...

class TypeIter(Iterator[Event]):
    def __new__(
        cls,
        records: list[tuple[Any, ...]],
        ctx: dict[int, list[Any]],
        loops: dict[int, Any],
        coros: dict[int, Any],
        labels: dict[tuple[int, int], str],
        open: set[tuple[Any, int, int]],
        tasks: dict[int, tuple[int, str]],
        stacks: list[Any],
        typer: Any,
        first: Event | None = None,
        done: Callable[[], None] | None = None,
    ) -> TypeIter: ...
    def __next__(self) -> Event: ...
