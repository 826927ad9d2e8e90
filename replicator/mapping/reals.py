"""A float32 as the text PostgreSQL prints for it: what a REAL carries when it arrives as its
exact binary value (Avro's ``float``, a binary COPY of a REAL) rather than as the shortest
decimal Debezium's JSON prints.  Pure functions, no I/O."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from fractions import Fraction

__all__ = ["real_value"]

_F32 = struct.Struct("<f")
_F32_BITS = struct.Struct("<I")
_F32_MAX = 3.4028234663852886e38


def _reads_back(decimal: str | Decimal, value: float) -> bool:
    """``decimal`` reads as the float32 ``value``, and not as a tie with a neighbour: a
    decimal exactly halfway between two float32 values is never printed for either (as in
    PostgreSQL's output: 35616750 is not the text of 35616752)."""
    try:
        if _F32.unpack(_F32.pack(float(decimal)))[0] != value:
            return False
    except OverflowError:  # beyond the largest float32
        return False
    bits = _F32_BITS.unpack(_F32.pack(abs(value)))[0]
    exact, point = Fraction(abs(value)), abs(Fraction(str(decimal)))
    below = Fraction(_F32.unpack(_F32_BITS.pack(bits - 1))[0])
    above = Fraction(_F32.unpack(_F32_BITS.pack(bits + 1))[0]) if abs(value) < _F32_MAX else None
    low = (below + exact) / 2
    high = (exact + above) / 2 if above is not None else exact + (exact - below) / 2
    return low < point < high


def real_value(value: float) -> float:
    """A float32 given as its exact binary value (Avro's ``float``, a binary COPY of a
    REAL) as the float of its shortest text, the text PostgreSQL prints for it
    (``123456.7890625`` -> ``123456.79``): the mapping then reads what a JSON event carries.

    The shortest decimal that reads back as ``value`` has the fewest significant digits
    ``p`` for which one exists.  The float32 values that read as ``value`` lie in an
    interval around it, symmetric unless ``value`` is a power of two (the float32 below is
    then closer than the one above): in the symmetric case ``value`` rounded to ``p`` digits
    is the closest ``p``-digit decimal, so it reads back if any does; at a power of two a
    neighbour of it may read back instead, and of those that do the closest wins, as in
    PostgreSQL's shortest-exact output.  A non-finite value is returned as is.
    """
    if not math.isfinite(value) or not value or abs(value) > _F32_MAX:
        return value
    power_of_two = _F32_BITS.unpack(_F32.pack(value))[0] & 0x7FFFFF == 0
    for digits in range(1, 10):
        text = f"{value:.{digits - 1}e}"
        if not power_of_two:
            if _reads_back(text, value):
                return float(text)
            continue
        nearest = Decimal(text)
        step = Decimal(1).scaleb(nearest.adjusted() - digits + 1)
        fits = [d for d in (nearest, nearest - step, nearest + step) if _reads_back(d, value)]
        if fits:
            return float(min(fits, key=lambda d: abs(d - Decimal(value))))
    return value  # not a float32 (more than 9 digits): its own text already
