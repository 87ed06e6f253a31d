"""aiotrace: an execution tracer for asyncio, in the spirit of Go's runtime/trace.

``aiotrace.start(sink)`` / ``aiotrace.stop()`` (or ``with aiotrace.tracing(sink)``)
record a trace; ``aiotrace.reader`` reads it back; the ``aiotrace`` command
dumps and analyses it. This module only re-exports the producer's names:
importing it does not import the reader.
"""

from . import sinks as sinks
from ._annotate import log as log
from ._annotate import logf as logf
from ._context import run_in_executor as run_in_executor
from ._context import wrap as wrap
from ._errors import TraceError as TraceError
from ._errors import TracingError as TracingError
from ._errors import TracingWarning as TracingWarning
from ._flight import FlightRecorder as FlightRecorder
from ._follow import follow_children as follow_children
from ._follow import unfollow_children as unfollow_children
from ._region import Region as Region
from ._region import region as region
from ._region import start_region as start_region
from ._region import with_region as with_region
from ._task import BACKGROUND_TASK as BACKGROUND_TASK
from ._task import NO_TASK as NO_TASK
from ._task import Task as Task
from ._task import current_task as current_task
from ._task import new_task as new_task
from ._tracer import Tracer as Tracer
from ._tracer import astop as astop
from ._tracer import is_enabled as is_enabled
from ._tracer import start as start
from ._tracer import stop as stop
from ._tracer import tracing as tracing

__version__ = "0.1.0"

__all__ = (
    "BACKGROUND_TASK",
    "NO_TASK",
    "FlightRecorder",
    "Region",
    "Task",
    "TraceError",
    "Tracer",
    "TracingError",
    "TracingWarning",
    "astop",
    "current_task",
    "follow_children",
    "is_enabled",
    "log",
    "logf",
    "new_task",
    "region",
    "run_in_executor",
    "sinks",
    "start",
    "start_region",
    "stop",
    "tracing",
    "unfollow_children",
    "with_region",
    "wrap",
)
