"""Integrations of aiotrace with other libraries, each behind its own extra.

``aiotrace.contrib.aiohttp`` (extra ``aiotrace[aiohttp]``): a server
middleware that makes each request a user task, a client ``TraceConfig``
that times outgoing requests, and live trace and flight-recorder endpoints.
Nothing here is imported by ``import aiotrace``.
"""
