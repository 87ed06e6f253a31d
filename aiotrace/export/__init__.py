"""Views of a trace: Perfetto (its protobuf, or trace-event JSON) and an HTML report.

``import aiotrace`` does not import this package.
"""

from ._perfetto import PerfettoResult as PerfettoResult
from ._perfetto import write_perfetto as write_perfetto
from ._report import ReportResult as ReportResult
from ._report import build_report_data as build_report_data
from ._report import render_report as render_report
from ._report import write_report as write_report

__all__ = (
    "PerfettoResult",
    "ReportResult",
    "build_report_data",
    "render_report",
    "write_perfetto",
    "write_report",
)
