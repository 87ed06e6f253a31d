"""The spec table, checked against itself and against the reader's model."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiotrace._encode import Encoder
from aiotrace._format import framing, spec
from aiotrace.reader import CoroState, EventKind, LoopState, ResourceKind


def test_codes_and_names_are_unique_and_dense() -> None:
    """Each event type has its own code and name; codes run 1..N with no gap,
    so a format version can only append."""
    codes = [s.code for s in spec.SPECS]
    names = [s.name for s in spec.SPECS]
    assert codes == list(range(1, len(spec.SPECS) + 1))
    assert len(set(names)) == len(names)
    assert spec.BY_CODE.keys() == set(codes)
    assert {s.name: s.code for s in spec.SPECS} == spec.C


def test_every_event_kind_has_an_event_type() -> None:
    """Every EventKind of the reader's API is produced by some wire type, and
    the table's kinds mirror the reader's enum exactly."""
    assert {k.name: k.value for k in spec.Kind} == {k.name: k.value for k in EventKind}
    produced = {s.kind.name for s in spec.SPECS}
    assert produced == {k.name for k in EventKind}


def test_enums_mirror_the_reader() -> None:
    """Wire enums and reader enums agree name for name, value for value."""
    pairs = [
        (spec.ResourceKind, ResourceKind),
        (spec.CoroState, CoroState),
        (spec.LoopState, LoopState),
    ]
    for wire, model in pairs:
        assert {e.name: e.value for e in wire} == {e.name: e.value for e in model}


def test_arguments_are_well_formed() -> None:
    """Argument names are unique identifiers within a type; the derived
    string and stack positions point at arguments of that encoding; a type
    has at most one stack."""
    for s in spec.SPECS:
        names = s.arg_names
        assert len(set(names)) == len(names), s.name
        assert all(n.isidentifier() for n in names), s.name
        for i in s.string_args:
            assert s.args[i][1] is spec.Arg.STRING
        for i in s.stack_args:
            assert s.args[i][1] is spec.Arg.STACK
        assert len(s.stack_args) <= 1, s.name


def test_sync_and_lost_records_are_in_the_table() -> None:
    """The table names the generation's sync record and the events-lost record
    the writer relies on."""
    assert spec.BY_CODE[spec.SYNC].kind is spec.Kind.SYNC
    lost = spec.BY_CODE[spec.EVENTS_LOST]
    assert lost.name == "EventsLost"
    assert lost.arg_names == ("count",)


def test_encoder_interns_exactly_the_table_s_strings_and_stacks() -> None:
    """The writer turns string and stack arguments into table ids where, and
    only where, the table says so, and passes every other argument through."""
    enc = Encoder()
    enc.begin_generation(0)
    for s in spec.SPECS:
        args = []
        for i, (_, kind) in enumerate(s.args):
            if kind is spec.Arg.STRING:
                args.append(f"string {i}")
            elif kind is spec.Arg.STACK:
                args.append((("f", "file.py", i),))
            else:
                args.append(1000 + i)
        out = enc._convert[s.code]((s.code, 0, *args), 5)
        assert out[:2] == (s.code, 5)
        for i, (_, kind) in enumerate(s.args):
            if kind is spec.Arg.STRING:
                assert enc._strings[f"string {i}"] == out[2 + i]
            elif kind is spec.Arg.STACK:
                assert out[2 + i] >= 1
            else:
                assert out[2 + i] == 1000 + i
        with pytest.raises(ValueError, match="unpack"):
            enc._convert[s.code]((s.code, 0, *args, "one too many"), 5)


def test_header_and_frame_kinds() -> None:
    """The header is the magic then the version; frame kinds are distinct."""
    assert framing.HEADER.startswith(framing.MAGIC)
    assert framing.VERSION in framing.SUPPORTED_VERSIONS
    kinds = [k.value for k in framing.FrameKind]
    assert len(set(kinds)) == len(kinds)
    assert all(0 < k < 256 for k in kinds)


def test_format_doc_lists_the_table() -> None:
    """docs/format.md's event table is the spec table, row for row."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    for s in spec.SPECS:
        args = ", ".join(f"{n}:{a.value}" for n, a in s.args)
        row = f"| {s.code} | `{s.name}` | {s.kind.name} | {args} |"
        assert row in doc, f"docs/format.md lacks: {row}"
    for k in framing.FrameKind:
        assert f"| {k.value} | `{k.name}` |" in doc
