"""RFC 3339 timestamps as the Kubernetes API writes them: UTC, a ``Z`` suffix, seconds or microseconds."""

from datetime import UTC, datetime


def rfc3339(moment: datetime, micro: bool = False) -> str:
    """``2026-01-31T12:00:00Z``; with ``micro`` the MicroTime form (Lease renewTime) ``...00.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def now(micro: bool = False) -> str:
    """The current time as ``rfc3339`` writes it."""
    return rfc3339(datetime.now(UTC), micro)


def parse(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime; ``ValueError`` when it is not one."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
