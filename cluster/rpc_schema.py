"""Typed RPC messages, checked where they arrive (Tahoe's `_SCHEMAS`, without a library).

An RPC's header is a msgpack map; `Rpc` declares, once per method, the fields of its
request and of its reply (`Schema`), each with a type (`Field`). The receiving end calls
`Schema.check(header)` before anything reads the header: the server before its handler,
the caller on the reply. A header that fails raises `SchemaError` naming the first field
that does not hold its type, with a short, escaped description of what was there.

    VID = pattern(r"[0-9a-f]{32}", "a version id (32 lowercase hex digits)")
    ABORT = Rpc("drive.abort", {"b": BUCKET, "v": VID}, reply={})
    h = ABORT.request.check(req.header)           # -> the header, or SchemaError

The rules, kept few so that a check stays a handful of C operations per field:

- Types are exact: msgpack decodes to int, float, bool, None, str, bytes, list and dict,
  and `type(v) is int` refuses a bool (Python's bool is an int subclass) where `isinstance`
  would let True through as 1.
- Every declared field is required; `optional(f)` also takes None (the senders always
  send the field, None when there is no value: absence is never a value).
- Fields a schema does not name are ignored: nothing reads them. Refusing them would only
  refuse a sender that says more than needed; a renamed field still fails as missing.
- Sizes are bounded by each field (strings in UTF-8 bytes, lists and maps in items) and
  the whole header by the transport's frame limit (1 MiB).
- A field may parse (`parsed`): `check` then returns a copy of the header with the decoded
  value (packed metadata -> ObjectMeta), so a message is decoded once, where it is checked.
  Containers (`list_of`, `tuple_of`, `map_of`) hold plain fields, not parsing ones.

Cost. Each schema is compiled once, at import, into one generated function: a leaf type
(`integer`, `text`, `pattern`, `blob`, ...) is an expression inlined into it, so a check
is a dict lookup and one or two C operations per field, no call per field. Measured
(tests/integration/test_drive_rpc_hostile.py::test_checks_cost_microseconds, best of 5 x
5,000 calls on a header as msgpack decodes it, on a shared 2-core machine): 0.4 to 1.3 us
for the read_shard, write_shard, read_meta, lock and scan requests; 3.5 to 6 us for a
commit request or a read_meta reply, which decode their packed ObjectMeta (~1.4 us of
msgpack that ObjectMeta.unpack paid anyway) and check its 13 fields. A read_meta round
trip over loopback QUIC takes ~550 us. pydantic v2 (a strict TypedDict, same regexes)
takes about as long on a flat header; it is not used because cluster/ keeps it out (it
types node/'s config), and the packed-metadata decoding, the exact msgpack types and the
bounded, escaped error text are the parts worth owning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

I64 = (1 << 63) - 1  # the largest count, offset or timestamp a field takes

_MISSING: Any = object()  # what a field absent from the header looks like to its check


class SchemaError(ValueError):
    """A message does not match its schema; the text says which field and why."""


def describe(value: Any) -> str:
    """A short, escaped picture of a value for an error message (never the whole value:
    a hostile peer's megabyte string must not come back as a megabyte of log line)."""
    if value is _MISSING:
        return "nothing (the field is missing)"
    kind = type(value).__name__
    if isinstance(value, str | bytes | bytearray):
        shown = repr(value[:32]) + ("..." if len(value) > 32 else "")
        return f"{kind} {shown} of length {len(value)}"
    if isinstance(value, list | tuple | dict):
        return f"{kind} of {len(value)} items"
    if isinstance(value, bool | int | float) or value is None:
        shown = repr(value)
        return f"{kind} {shown[:40]}{'...' if len(shown) > 40 else ''}"
    return kind


class Field:
    """A field's type: `ok(value)` is True when the value has it; `what` says it in words.

    A leaf type is an expression, `src` (a template over the value `{v}` and its constants
    `consts`, bound by name), compiled into `ok` and inlined into the checks of schemas and
    containers that hold it: no call per field. Other types bring their own `ok`.
    `why(value)` explains a failure (containers point at the item that failed); `parse`,
    when set, turns the checked value into the one handlers see, raising ValueError."""

    __slots__ = ("what", "ok", "src", "consts", "why", "parse")

    def __init__(
        self,
        what: str,
        ok: Callable[[Any], bool] | None = None,
        *,
        src: str | None = None,
        consts: Mapping[str, Any] | None = None,
        why: Callable[[Any], str] | None = None,
        parse: Callable[[Any], Any] | None = None,
    ) -> None:
        self.what = what
        self.src = src
        self.consts = dict(consts or {})
        if ok is None:
            if src is None:
                raise TypeError("a Field needs `ok` or `src`")
            env: dict[str, Any] = {}
            ok = _compile(f"def ok(v):\n    return {self.inline('v', {}, env)}", env)
        self.ok = ok
        self.why = why
        self.parse = parse

    def inline(self, var: str, names: dict[int, str], env: dict[str, Any]) -> str:
        """This type as an expression over the variable `var`, its constants added to `env`
        (a leaf type), or a call of its `ok` (any other)."""
        if self.src is None:
            return f"{_bind(self.ok, names, env)}({var})"
        bound = {k: _bind(c, names, env) for k, c in self.consts.items()}
        return "(" + self.src.format(v=var, **bound) + ")"

    def explain(self, value: Any) -> str:
        if self.why is not None and value is not _MISSING:
            return self.why(value)
        return f"expected {self.what}, got {describe(value)}"


def _bind(value: Any, names: dict[int, str], env: dict[str, Any]) -> str:
    """The name `value` has in generated code (an int literal as itself)."""
    if type(value) is int:
        return repr(value)
    name = names.get(id(value))
    if name is None:
        name = names[id(value)] = f"_k{len(env)}"
        env[name] = value
    return name


def _compile(source: str, env: dict[str, Any]) -> Callable[[Any], bool]:
    """The function `ok` defined by `source` (generated here, from field types only: never
    from message contents), with the names of `env` in scope."""
    env["_MISSING"] = _MISSING
    exec(compile(source, "<rpc_schema>", "exec"), env)
    return env["ok"]


def _checks(pairs: Sequence[tuple[str, Field]]) -> tuple[list[str], dict[str, Any]]:
    """Statements checking each (expression, field) in turn, then `return True`; and the
    names they use."""
    lines: list[str] = []
    names: dict[int, str] = {}
    env: dict[str, Any] = {}
    for expr, f in pairs:
        lines += [
            f"    x = {expr}",
            f"    if not {f.inline('x', names, env)}:",
            "        return False",
        ]
    return lines + ["    return True"], env


# -- field types -----------------------------------------------------------------------------
BOOL = Field("a boolean", src="type({v}) is bool")


def integer(lo: int, hi: int) -> Field:
    """An int in [lo, hi] (not a bool, not a float)."""
    return Field(
        f"an integer in [{lo}, {hi}]",
        src="type({v}) is int and {lo} <= {v} <= {hi}",
        consts={"lo": lo, "hi": hi},
    )


def number(above: float, most: float) -> Field:
    """An int or float in (above, most]; NaN fails every comparison, so it never passes."""
    shown = f"({above:g}, {most:g}]" if math.isfinite(most) else f"> {above:g}"
    return Field(
        f"a number in {shown}",
        src="(type({v}) is float or type({v}) is int) and {lo} < {v} <= {hi}",
        consts={"lo": float(above), "hi": float(most)},
    )


def text(most: int, *, empty: bool = True) -> Field:
    """A str of at most `most` bytes of UTF-8 (and not empty unless `empty`)."""
    return Field(
        f"a {'' if empty else 'non-empty '}string of at most {most} bytes of UTF-8",
        # a str of at most most // 4 characters cannot exceed `most` bytes: not encoded
        src="type({v}) is str and {least} <= len({v}) and (len({v}) <= {quick} "
        "or len({v}.encode('utf-8', 'surrogatepass')) <= {most})",
        consts={"least": 0 if empty else 1, "quick": most // 4, "most": most},
    )


def pattern(regex: str, what: str) -> Field:
    """A str matching `regex` whole (compiled once; ~0.1 us per match in C)."""
    return Field(
        what,
        src="type({v}) is str and {match}({v}) is not None",
        consts={"match": re.compile(regex).fullmatch},
    )


def blob(most: int, *, least: int = 0) -> Field:
    """bytes of `least` to `most` bytes."""
    return Field(
        f"bytes of length {least}" if least == most else f"at most {most} bytes",
        src="type({v}) is bytes and {least} <= len({v}) <= {most}",
        consts={"least": least, "most": most},
    )


def starting(prefix: bytes, what: str) -> Field:
    """bytes that start with `prefix`."""
    return Field(
        what, src="type({v}) is bytes and {v}[:{n}] == {p}", consts={"n": len(prefix), "p": prefix}
    )


def optional(inner: Field) -> Field:
    """None, or a value of `inner`."""
    parse_inner = inner.parse
    parse = None
    if parse_inner is not None:

        def parse(v: Any) -> Any:
            return None if v is None else parse_inner(v)

    what = f"{inner.what} or nil"
    why = inner.why and (lambda v: inner.explain(v))
    if inner.src is not None:
        return Field(
            what,
            src="{v} is None or (" + inner.src + ")",
            consts=inner.consts,
            why=why,
            parse=parse,
        )
    ok_inner = inner.ok
    return Field(what, lambda v: v is None or ok_inner(v), why=why, parse=parse)


def parsed(inner: Field, parse: Callable[[Any], Any], what: str = "") -> Field:
    """A value of `inner` that `parse` decodes (raising ValueError when it cannot)."""
    return (
        Field(what or inner.what, src=inner.src, consts=inner.consts, why=inner.why, parse=parse)
        if inner.src is not None
        else Field(what or inner.what, inner.ok, why=inner.why, parse=parse)
    )


def _plain(*fields: Field) -> None:
    if any(f.parse is not None for f in fields):
        raise TypeError("containers hold plain fields, not parsing ones")


def list_of(item: Field, most: int) -> Field:
    """A list of at most `most` values of `item`."""
    _plain(item)
    names: dict[int, str] = {}
    env: dict[str, Any] = {}
    test = item.inline("x", names, env)
    ok = _compile(
        f"def ok(v):\n    if type(v) is not list or len(v) > {most}:\n        return False\n"
        f"    for x in v:\n        if not {test}:\n            return False\n    return True",
        env,
    )

    def why(v: Any) -> str:
        if type(v) is not list or len(v) > most:
            return f"expected a list of at most {most} items, got {describe(v)}"
        at = next(i for i, x in enumerate(v) if not item.ok(x))
        return f"item {at}: {item.explain(v[at])}"

    return Field(f"a list of at most {most} of ({item.what})", ok, why=why)


def tuple_of(*items: Field, what: str = "") -> Field:
    """A list of exactly len(items) values, each of its own type (msgpack has no tuples)."""
    _plain(*items)
    size = len(items)
    what = what or f"a list of {size} items"
    lines, env = _checks([(f"v[{i}]", f) for i, f in enumerate(items)])
    head = f"def ok(v):\n    if type(v) is not list or len(v) != {size}:\n        return False\n"
    ok = _compile(head + "\n".join(lines), env)

    def why(v: Any) -> str:
        if type(v) is not list or len(v) != size:
            return f"expected {what}, got {describe(v)}"
        at = next(i for i, (f, x) in enumerate(zip(items, v, strict=True)) if not f.ok(x))
        return f"item {at}: {items[at].explain(v[at])}"

    return Field(what, ok, why=why)


def map_of(key: Field, value: Field, most: int) -> Field:
    """A map of at most `most` entries, keys of `key`, values of `value`."""
    _plain(key, value)
    names: dict[int, str] = {}
    env: dict[str, Any] = {}
    test_key, test_value = key.inline("k", names, env), value.inline("x", names, env)
    ok = _compile(
        f"def ok(v):\n    if type(v) is not dict or len(v) > {most}:\n        return False\n"
        f"    for k, x in v.items():\n        if not ({test_key} and {test_value}):\n"
        "            return False\n    return True",
        env,
    )

    def why(v: Any) -> str:
        if type(v) is not dict or len(v) > most:
            return f"expected a map of at most {most} entries, got {describe(v)}"
        k, x = next((k, x) for k, x in v.items() if not (key.ok(k) and value.ok(x)))
        if not key.ok(k):
            return f"a key: {key.explain(k)}"
        return f"entry {describe(k)}: {value.explain(x)}"

    return Field(f"a map of ({key.what}) to ({value.what})", ok, why=why)


# -- messages --------------------------------------------------------------------------------
class Schema:
    """The fields of one message (a request or a reply header)."""

    __slots__ = ("name", "fields", "_ok", "_parsers")

    def __init__(self, name: str, fields: Mapping[str, Field]) -> None:
        self.name = name
        self.fields = dict(fields)
        lines, env = _checks([(f"g({k!r}, _MISSING)", f) for k, f in self.fields.items()])
        self._ok = _compile("def ok(h):\n    g = h.get\n" + "\n".join(lines), env)
        self._parsers = tuple((k, f.parse) for k, f in self.fields.items() if f.parse)

    def check(self, header: Any) -> dict[str, Any]:
        """The header if every field holds its type (a copy with parsed fields decoded,
        when the schema has any); SchemaError otherwise."""
        if type(header) is not dict:
            raise SchemaError(f"{self.name}: expected a map, got {describe(header)}")
        if not self._ok(header):
            name, f = next(
                (k, f) for k, f in self.fields.items() if not f.ok(header.get(k, _MISSING))
            )
            raise SchemaError(
                f"{self.name}: field {name!r}: {f.explain(header.get(name, _MISSING))}"
            )
        if not self._parsers:
            return header
        out = dict(header)
        for name, parse in self._parsers:
            try:
                out[name] = parse(out[name])
            except ValueError as exc:
                raise SchemaError(f"{self.name}: field {name!r}: {exc}") from None
        return out


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Rpc:
    """One RPC method's messages: the request header, the reply header it answers with
    (Garage's `type Response`), and what travels as a body, if anything.

    `reply_body`, when set, is the type of the reply body's msgpack value (checked by the
    caller with `check_reply_body`); `body` says in words what raw bytes travel."""

    method: str
    request_fields: Mapping[str, Field]
    reply_fields: Mapping[str, Field]
    body: str = "none"
    reply_body: Field | None = None
    request: Schema = field(init=False)
    reply: Schema = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "request", Schema(f"{self.method} request", self.request_fields))
        object.__setattr__(self, "reply", Schema(f"{self.method} reply", self.reply_fields))
        if self.reply_body is not None:
            _plain(self.reply_body)

    def check_reply_body(self, value: Any) -> Any:
        """The decoded reply body if it has the declared type; SchemaError otherwise."""
        if self.reply_body is None or self.reply_body.ok(value):
            return value
        raise SchemaError(f"{self.method} reply body: {self.reply_body.explain(value)}")
