"""Kubernetes quantities ("18Gi", "6G", "1.5e9", "500m", 7000000000) as numbers, parsed as the API server parses them."""

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal | int] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
# Byte units as people write them (13GB, 13GiB, 13kB): Kubernetes spells them 13G or 13Gi, 13k or 13Ki.
_BYTE_UNIT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kKmMgGtTpPeE])i?[bB]$")
#: The largest quantity the API server stores exactly (an int64); above it Kubernetes saturates.
INT64_MAX = 2**63 - 1
_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def parse(value: int | str) -> Decimal:
    """The exact amount in ``value``; ValueError names the bad value and how to write it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity; write it like 16Gi, 6G or 7000000000")
    if isinstance(value, int):
        return Decimal(value)
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        unit = _BYTE_UNIT.match(text)
        if unit is not None:
            number, letter = unit.group(1), unit.group(2).upper()
            raise ValueError(f"{value!r} is not a quantity: use {number}{'k' if letter == 'K' else letter} or {number}{letter}i")
        raise ValueError(f"{value!r} is not a quantity; write it like 16Gi, 6G or 7000000000")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        # "E" and "Ei" are suffixes; only an "e"/"E" followed by digits is an exponent.
        scale = Decimal(_SUFFIXES[suffix]) if suffix in _SUFFIXES else Decimal(10) ** int(suffix[1:])
        return Decimal(number) * scale
    except (InvalidOperation, KeyError, ValueError):
        raise ValueError(f"{value!r} is not a quantity; write it like 16Gi, 6G or 7000000000") from None


def parse_bytes(value: int | str) -> int:
    """Whole bytes in ``value``. A fraction of a byte ("100m", "1.5") is refused rather than rounded
    up to a 1-byte model, and so is anything beyond what the API server can hold (8Ei and up)."""
    amount = parse(value)
    if amount < 0:
        raise ValueError(f"{value!r} is negative; a size is at least 0")
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes; write it like 6G, 6Gi or 6000000000")
    if amount > INT64_MAX:
        raise ValueError(f"{value!r} is larger than Kubernetes can hold (at most 8Ei less one byte)")
    return int(amount)


def parse_units(value: int | str, milli: bool = False) -> int:
    """A resource request as kube-scheduler counts it: CPU in millicores (``milli``), everything
    else in whole units (bytes, GPUs), rounded up; values beyond an int64 saturate as Kubernetes' do."""
    amount = parse(value) * (1000 if milli else 1)
    return min(INT64_MAX, max(0, int(amount.to_integral_value(rounding="ROUND_CEILING"))))


def format_bytes(amount: int) -> str:
    """Bytes the way a person reads them back: 12Gi, 6.5Gi, 512Mi, 1000."""
    for suffix, unit in _BINARY:
        if abs(amount) >= unit:
            text = f"{amount / unit:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(amount)
