"""Plain data across a process boundary: the only things the split judge and the candidate exchange.

None, bool, int, float, complex, str, bytes, list, tuple, dict, set and frozenset, nested. The
encoder accepts exactly these types (no subclasses: a ``str`` subclass with its own ``__eq__`` is
refused), and the decoder builds only these from bytes it does not trust: it never calls a
constructor named by the data and never evaluates anything, so a hostile peer can make it raise
``ValueError`` and nothing else. (``marshal`` and ``pickle`` are not safe on untrusted bytes.)

This file runs inside the sandbox too, prepended to the harness's source: standard library only,
and nothing imported at module level beyond the built-in ``_struct``.
"""

import _struct

_DOUBLE = _struct.Struct("<d")
_LEN = _struct.Struct("<I")
_MAX_DEPTH = 200


class NotPlain(TypeError):
    """A value of a type that cannot cross: its type's name is in ``args[0]``."""


def encode(value):
    """``value`` as bytes; raises :class:`NotPlain` naming the first type that is not plain data."""
    out = []
    _put(value, out, 0)
    return b"".join(out)


def _put(value, out, depth):
    if depth > _MAX_DEPTH:
        raise NotPlain("nesting deeper than %d levels" % _MAX_DEPTH)
    kind = type(value)
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
        out.append(b"i" + _LEN.pack(len(raw)) + raw)
    elif kind is float:
        out.append(b"f" + _DOUBLE.pack(value))
    elif kind is complex:
        out.append(b"c" + _DOUBLE.pack(value.real) + _DOUBLE.pack(value.imag))
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        out.append(b"s" + _LEN.pack(len(raw)) + raw)
    elif kind is bytes:
        out.append(b"b" + _LEN.pack(len(value)) + value)
    elif kind in _SEQUENCES:
        out.append(_SEQUENCES[kind] + _LEN.pack(len(value)))
        for item in value:
            _put(item, out, depth + 1)
    elif kind is dict:
        out.append(b"d" + _LEN.pack(len(value)))
        for key, item in value.items():
            _put(key, out, depth + 1)
            _put(item, out, depth + 1)
    else:
        raise NotPlain(kind.__name__)


_SEQUENCES = {list: b"l", tuple: b"t", set: b"e", frozenset: b"z"}
_BUILD = {b"l": list, b"t": tuple, b"e": set, b"z": frozenset}


def decode(data):
    """The value ``data`` encodes; ``ValueError`` for anything malformed (never another exception)."""
    try:
        value, end = _get(memoryview(data), 0, 0)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an unhashable key, a truncated length
        raise ValueError(f"malformed plain data: {exc.__class__.__name__}") from None
    if end != len(data):
        raise ValueError("malformed plain data: trailing bytes")
    return value


def _length(data, at):
    if at + 4 > len(data):
        raise ValueError("malformed plain data: truncated")
    return _LEN.unpack_from(data, at)[0], at + 4


def _get(data, at, depth):
    if depth > _MAX_DEPTH or at >= len(data):
        raise ValueError("malformed plain data: too deep or truncated")
    tag = bytes(data[at : at + 1])
    at += 1
    if tag == b"N":
        return None, at
    if tag == b"T":
        return True, at
    if tag == b"F":
        return False, at
    if tag == b"f":
        if at + 8 > len(data):
            raise ValueError("malformed plain data: truncated")
        return _DOUBLE.unpack_from(data, at)[0], at + 8
    if tag == b"c":
        if at + 16 > len(data):
            raise ValueError("malformed plain data: truncated")
        return complex(_DOUBLE.unpack_from(data, at)[0], _DOUBLE.unpack_from(data, at + 8)[0]), at + 16
    if tag in (b"i", b"s", b"b"):
        size, at = _length(data, at)
        if at + size > len(data):
            raise ValueError("malformed plain data: truncated")
        raw = bytes(data[at : at + size])
        if tag == b"i":
            return int.from_bytes(raw, "little", signed=True), at + size
        if tag == b"s":
            return raw.decode("utf-8", "surrogatepass"), at + size
        return raw, at + size
    if tag in _BUILD:
        count, at = _length(data, at)
        items = []
        for _ in range(count):
            item, at = _get(data, at, depth + 1)
            items.append(item)
        return _BUILD[tag](items), at
    if tag == b"d":
        count, at = _length(data, at)
        result = {}
        for _ in range(count):
            key, at = _get(data, at, depth + 1)
            result[key], at = _get(data, at, depth + 1)
        return result, at
    raise ValueError(f"malformed plain data: unknown tag {tag!r}")
