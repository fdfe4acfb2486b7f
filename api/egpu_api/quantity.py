"""Kubernetes quantities ("18Gi", "6G", "1.5e9", 7000000000) as whole bytes."""

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


def parse_bytes(value: int | str) -> int:
    """Bytes in ``value``, rounded up as Kubernetes rounds quantities; ValueError names the bad value."""
    if isinstance(value, int):
        return value
    match = _QUANTITY.match(value.strip())
    if match is None:
        unit = _BYTE_UNIT.match(value.strip())
        if unit is not None:
            number, letter = unit.group(1), unit.group(2).upper()
            raise ValueError(f"{value!r} is not a quantity: use {number}{'k' if letter == 'K' else letter} or {number}{letter}i")
        raise ValueError(f"{value!r} is not a quantity; write it like 16Gi, 6G or 7000000000")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Decimal(number) * (Decimal(10) ** int(suffix[1:]) if suffix[:1] in "eE" and suffix else _SUFFIXES[suffix])
    except (InvalidOperation, KeyError):
        raise ValueError(f"{value!r} is not a quantity; write it like 16Gi, 6G or 7000000000") from None
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))
