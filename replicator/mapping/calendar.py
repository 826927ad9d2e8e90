"""The calendar of a snapshot read's timestamps (pure).

PostgreSQL stores timestamps in the proleptic Gregorian calendar.  Debezium's snapshot
(the initial one, ``--resnapshot``, and the incremental reads ``verify --repair``
requests) reads rows through JDBC, whose ``java.sql.Timestamp`` uses a hybrid calendar:
Julian before the Gregorian reform of 1582-10-15.  So the wall-clock value
``1500-06-01 12:00`` is read as the Julian date 1500-06-01 and emitted as that
instant, which is the Gregorian 1500-06-11: ten days late (two days early in year 1,
which then falls outside the representable range).  Streamed changes are decoded from
the WAL as text and are exact.

:func:`snapshot_micros` undoes the shift: an emitted instant before the reform is
turned back into its Julian calendar fields, which are the source's Gregorian fields.
The dates 1582-10-05 to 1582-10-14 exist in PostgreSQL but not in the hybrid calendar,
which reads them as the Gregorian 1582-10-15 to 1582-10-24: an instant in those ten
days may be either, so it is refused (the event is dead-lettered with the reason),
never guessed.
"""

from __future__ import annotations

from datetime import date

DAY_US = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_JDN = 2_440_588  # the Julian day number of 1970-01-01
#: 1582-10-15 00:00, the first day of the Gregorian calendar, as epoch microseconds.
REFORM_US = (date(1582, 10, 15).toordinal() - _EPOCH_ORDINAL) * DAY_US
#: The end of the ten days a snapshot read cannot tell from 1582-10-05 .. 1582-10-14.
AMBIGUOUS_UNTIL_US = REFORM_US + 10 * DAY_US


class CalendarError(ValueError):
    """A snapshot read's timestamp whose source value cannot be known for sure."""


def julian_fields(jdn: int) -> tuple[int, int, int]:
    """Pure. The Julian calendar (year, month, day) of Julian day number ``jdn``
    (astronomical years: 0 is 1 BC)."""
    c = jdn + 32_082
    d = (4 * c + 3) // 1461
    e = c - (1461 * d) // 4
    m = (5 * e + 2) // 153
    day = e - (153 * m + 2) // 5 + 1
    month = m + 3 - 12 * (m // 10)
    return d - 4800 + m // 10, month, day


def snapshot_micros(value: int) -> int:
    """Pure. The proleptic Gregorian epoch microseconds of the timestamp a snapshot read
    emitted as ``value`` (module docstring); raises :class:`CalendarError`."""
    if value >= AMBIGUOUS_UNTIL_US:
        return value
    if value >= REFORM_US:
        raise CalendarError(
            f"{value} microseconds since 1970-01-01, read by a snapshot, is a day of"
            " 1582-10-15 .. 1582-10-24 or of 1582-10-05 .. 1582-10-14 (the days the JDBC"
            " calendar skips); the snapshot cannot tell which: change the row so that it"
            " streams, or load it with `replicator backfill`"
        )
    days, within = divmod(value, DAY_US)
    year, month, day = julian_fields(days + _EPOCH_JDN)
    try:
        ordinal = date(year, month, day).toordinal()
    except ValueError:
        raise CalendarError(
            f"{value} microseconds since 1970-01-01, read by a snapshot, is the Julian date"
            f" {year:04d}-{month:02d}-{day:02d}, which is before year 1 or not a Gregorian"
            " date: the target's timestamps cannot hold it"
        ) from None
    return (ordinal - _EPOCH_ORDINAL) * DAY_US + within
