"""NCRONTAB, the timer trigger's schedule format: six fields, seconds first, evaluated in UTC.

``{second} {minute} {hour} {day} {month} {day-of-week}``; croniter knows a seconds field but wants
it last, so the fields are rotated. A ``hh:mm:ss`` TimeSpan (an interval, allowed on dedicated plans)
is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from tower.errors import ConfigError


@dataclass(frozen=True)
class NCrontab:
    expression: str
    interval: timedelta | None = None  # set for a TimeSpan schedule

    @classmethod
    def parse(cls, expression: str, *, where: str = "timer schedule") -> NCrontab:
        from croniter import croniter

        text = " ".join(expression.split())
        if ":" in text and " " not in text:
            return cls(text, _timespan(text, where))
        fields = text.split(" ")
        if len(fields) != 6:
            raise ConfigError(
                f"{where}: {expression!r} has {len(fields)} fields; NCRONTAB needs 6 "
                "(second minute hour day month day-of-week), e.g. '0 */5 * * * *' for every 5 minutes"
            )
        if not croniter.is_valid(_rotated(text)):
            raise ConfigError(f"{where}: {expression!r} is not a valid NCRONTAB expression")
        return cls(text)

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (an aware datetime), in UTC."""
        moment = moment.astimezone(timezone.utc)
        if self.interval is not None:
            return moment + self.interval
        from croniter import croniter

        return croniter(_rotated(self.expression), moment).get_next(datetime).astimezone(timezone.utc)


def _rotated(expression: str) -> str:
    seconds, *rest = expression.split(" ")
    return " ".join([*rest, seconds])


def _timespan(text: str, where: str) -> timedelta:
    try:
        hours, minutes, seconds = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a hh:mm:ss interval") from None
    interval = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if interval <= timedelta(0):
        raise ConfigError(f"{where}: {text!r} must be a positive interval")
    return interval
