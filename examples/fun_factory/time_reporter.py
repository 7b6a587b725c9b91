"""The time reporter: says what time it is in a time zone.

Run it:  python examples/fun_factory/time_reporter.py -i 0 --tcp 127.0.0.1:8905

- ``time_reporter.now`` ``{"timezone": "Europe/Paris"}`` ->
  ``{"timezone": "Europe/Paris", "iso": "2026-11-29T08:15:02+01:00",
  "spoken": "It is 08:15 in Europe/Paris."}``
- An unknown time zone is answered with status 300 and the zone named in the message.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from ecosys import Application, Reject, Status, endpoint

log = logging.getLogger("time_reporter")


class TimeRequest(BaseModel):
    """Which time zone (an IANA name such as "Asia/Tokyo")."""

    timezone: str = Field("UTC", min_length=1, max_length=64)


class TimeReport(BaseModel):
    """The time now in that zone."""

    timezone: str
    iso: str
    spoken: str


@endpoint("time_reporter.now")
async def now(request: TimeRequest) -> TimeReport:
    """Report the current time in request.timezone."""
    try:
        zone = ZoneInfo(request.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Reject(Status.VALIDATION_ERROR, f"unknown time zone {request.timezone!r}") from exc
    moment = datetime.now(zone)
    log.info("reported the time in %s", request.timezone)
    return TimeReport(timezone=request.timezone, iso=moment.isoformat(timespec="seconds"),
                      spoken=f"It is {moment:%H:%M} in {request.timezone}.")


if __name__ == "__main__":
    Application("time_reporter").run()
