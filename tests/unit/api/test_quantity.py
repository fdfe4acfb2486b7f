import pytest

from egpu_api.quantity import parse_bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [("18Gi", 18 * 2**30), ("6G", 6_000_000_000), ("1.5Gi", 1_610_612_736), (7_000_000_000, 7_000_000_000),
     ("7e9", 7_000_000_000), ("512Mi", 536_870_912), ("100m", 1), ("0", 0)],
)  # fmt: skip
def test_quantities_in_bytes(value: int | str, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["eighteen", "18 GB", "GB", ""])
def test_bad_quantities_say_how_to_write_one(value: str) -> None:
    with pytest.raises(ValueError, match="is not a quantity; write it like 16Gi"):
        parse_bytes(value)


@pytest.mark.parametrize(
    ("value", "fix"),
    [("13GB", "13G or 13Gi"), ("13GiB", "13G or 13Gi"), ("13gb", "13G or 13Gi"), ("1.5TB", "1.5T or 1.5Ti"),
     ("512MB", "512M or 512Mi"), ("64KB", "64k or 64Ki"), ("64kB", "64k or 64Ki")],
)  # fmt: skip
def test_byte_units_get_the_kubernetes_spelling(value: str, fix: str) -> None:
    with pytest.raises(ValueError, match=f"^'{value}' is not a quantity: use {fix}$"):
        parse_bytes(value)
