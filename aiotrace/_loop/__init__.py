"""Loop hooks: one module per loop flavour, sharing ``_state.Hooks``."""

from __future__ import annotations

from .._recorder import Recorder
from ._state import Hooks


class Runtime:
    """Runtime is the execution tracer of one trace: loop hooks, the GC hook
    and the watchdog (stalls and metrics)."""

    def __init__(
        self,
        rec: Recorder,
        *,
        stall_threshold: float | None,
        metrics_interval: float | None,
        block_stacks: bool,
    ) -> None:
        from .._runtime import MetricSampler, install_gc
        from .._stall import Watchdog
        from . import _asyncio, _trio, _uvloop
        from ._follow import follow

        self.hooks = hooks = Hooks(rec, stall_threshold=stall_threshold)
        self._watchdog: Watchdog | None = None
        try:
            _asyncio.install(hooks, block_stacks=block_stacks)
            # Now if imported, else when the program imports them.
            follow(
                hooks,
                {
                    "trio": lambda: _trio.install(hooks),
                    "uvloop": lambda: _uvloop.install(hooks, block_stacks=block_stacks),
                },
            )
            install_gc(hooks)
            metrics = (
                MetricSampler(hooks, metrics_interval) if metrics_interval else None
            )
            if stall_threshold is not None or metrics is not None:
                self._watchdog = Watchdog(hooks, metrics)
                self._watchdog.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, *, join: bool = True) -> None:
        """Undoes every hook; with ``join``, waits for the watchdog to exit."""
        self.hooks.uninstall()
        if self._watchdog is not None:
            self._watchdog.stop(join=join)
