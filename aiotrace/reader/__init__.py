"""Reading traces: ``Reader``, ``AsyncReader``, ``read_events`` and the Event model.

This is aiotrace's ``golang.org/x/exp/trace``: a streaming, validating reader
that turns trace bytes into typed events. Importing ``aiotrace`` does not
import it.
"""

from . import _impl
from ._decode import RawEvent as RawEvent
from ._impl import implementation as implementation
from ._model import (
    BACKGROUND_TASK as BACKGROUND_TASK,
)
from ._model import (
    NO_COROUTINE as NO_COROUTINE,
)
from ._model import (
    NO_LOOP as NO_LOOP,
)
from ._model import (
    NO_STACK as NO_STACK,
)
from ._model import (
    NO_TASK as NO_TASK,
)
from ._model import (
    NO_THREAD as NO_THREAD,
)
from ._model import CoroID as CoroID
from ._model import CoroState as CoroState
from ._model import Event as Event
from ._model import EventKind as EventKind
from ._model import Label as Label
from ._model import Log as Log
from ._model import LoopID as LoopID
from ._model import LoopState as LoopState
from ._model import Metric as Metric
from ._model import Range as Range
from ._model import Region as Region
from ._model import ResourceID as ResourceID
from ._model import ResourceKind as ResourceKind
from ._model import Stack as Stack
from ._model import StackFrame as StackFrame
from ._model import StateTransition as StateTransition
from ._model import Sync as Sync
from ._model import Task as Task
from ._model import TaskID as TaskID
from ._model import ThreadID as ThreadID
from ._model import TraceError as TraceError
from ._model import format_event as format_event
from ._reader import AsyncReader as AsyncReader
from ._reader import Reader as Reader
from ._reader import read_events as read_events
from ._typed import LOST_METRIC as LOST_METRIC
from ._validate import Problem as Problem
from ._validate import Validator as Validator
from ._validate import validate as validate

__all__ = (
    "BACKGROUND_TASK",
    "LOST_METRIC",
    "NO_COROUTINE",
    "NO_LOOP",
    "NO_STACK",
    "NO_TASK",
    "NO_THREAD",
    "AsyncReader",
    "CoroID",
    "CoroState",
    "Event",
    "EventKind",
    "Label",
    "Log",
    "LoopID",
    "LoopState",
    "Metric",
    "Problem",
    "Range",
    "RawEvent",
    "Reader",
    "Region",
    "ResourceID",
    "ResourceKind",
    "Stack",
    "StackFrame",
    "StateTransition",
    "Sync",
    "Task",
    "TaskID",
    "ThreadID",
    "TraceError",
    "Validator",
    "format_event",
    "implementation",
    "read_events",
    "validate",
)

_impl.init()
