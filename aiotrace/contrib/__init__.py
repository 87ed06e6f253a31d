"""Integrations of aiotrace with other libraries, each behind its own extra.

``aiotrace.contrib.aiohttp`` (extra ``aiotrace[aiohttp]``): a server
middleware that makes each request a user task, a client ``TraceConfig``
that times outgoing requests, and live trace and flight-recorder endpoints.
``aiotrace.contrib.opentelemetry`` (extra ``aiotrace[opentelemetry]``):
OpenTelemetry spans become aiotrace tasks and regions, loop stalls and long
waits become span events, loop health becomes OTel metrics.
Nothing here is imported by ``import aiotrace``.
"""
