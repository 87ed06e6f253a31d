"""Trace format v1: the spec table, header and framing.

This package imports nothing else from aiotrace; the writer and the reader
both depend on it and on nothing of each other.
"""
