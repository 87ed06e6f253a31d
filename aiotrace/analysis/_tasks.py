"""User tasks and regions: latency distributions by type."""

from __future__ import annotations

from ._dist import Distribution


class TaskAccounting:
    """TaskAccounting measures user tasks (TASK_BEGIN..TASK_END) by type.

    Invariant: ``open`` holds only tasks begun and not yet ended. A task
    that ends without its beginning in the trace (it began before tracing,
    or before a snapshot) has no latency and is not counted.
    """

    def __init__(self) -> None:
        self.open: dict[int, tuple[str, int]] = {}
        self.types: dict[str, Distribution] = {}

    def _dist(self, type_: str) -> Distribution:
        d = self.types.get(type_)
        if d is None:
            d = self.types[type_] = Distribution()
        return d

    def begin(self, task: int, type_: str, t: int) -> None:
        """Records that ``task`` of type ``type_`` began at ``t``."""
        self._dist(type_)
        self.open[task] = (type_, t)

    def end(self, task: int, t: int) -> None:
        """Records that ``task`` ended at ``t``."""
        began = self.open.pop(task, None)
        if began is not None:
            self.types[began[0]].add(t - began[1])

    def finish(self) -> dict[str, Distribution]:
        """Counts the tasks still open as unfinished; returns types, by name."""
        for type_, _ in self.open.values():
            self.types[type_].unfinished += 1
        self.open.clear()
        return dict(sorted(self.types.items()))


class RegionAccounting:
    """RegionAccounting measures regions (REGION_BEGIN..REGION_END) by type.

    Regions nest in the coroutine (or, outside coroutines, the thread) that
    began them, so each keeps its own stack of open regions; an end closes
    the innermost open region of its type there. Invariant: ``open`` holds
    only coroutines or threads with open regions, and ``drop`` forgets a
    coroutine that ended, counting its open regions as unfinished.
    """

    def __init__(self) -> None:
        self.open: dict[object, list[tuple[str, int, int]]] = {}
        self.types: dict[str, Distribution] = {}

    def begin(self, where: object, task: int, type_: str, t: int) -> None:
        """Records a region of ``type_`` beginning in ``where`` at ``t``."""
        if type_ not in self.types:
            self.types[type_] = Distribution()
        stack = self.open.get(where)
        if stack is None:
            stack = self.open[where] = []
        stack.append((type_, task, t))

    def end(self, where: object, task: int, type_: str, t: int) -> None:
        """Records a region of ``type_`` ending in ``where`` at ``t``."""
        stack = self.open.get(where)
        if not stack:
            return
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == type_ and stack[i][1] == task:
                self.types[type_].add(t - stack[i][2])
                del stack[i]
                break
        if not stack:
            del self.open[where]

    def drop(self, where: object) -> None:
        """Forgets ``where`` (an ended coroutine); its open regions are unfinished."""
        stack = self.open.pop(where, None)
        if stack:
            for type_, _, _ in stack:
                self.types[type_].unfinished += 1

    def finish(self) -> dict[str, Distribution]:
        """Counts the regions still open as unfinished; returns types, by name."""
        for key in list(self.open):
            self.drop(key)
        return dict(sorted(self.types.items()))
