import pytest

from egpu_api.quantity import format_bytes, parse_bytes, parse_units


@pytest.mark.parametrize(
    ("value", "expected"),
    [("18Gi", 18 * 2**30), ("6G", 6_000_000_000), ("1.5Gi", 1_610_612_736), (7_000_000_000, 7_000_000_000),
     ("7e9", 7_000_000_000), ("512Mi", 536_870_912), ("0", 0), ("1000m", 1), ("7Ei", 7 * 2**60)],
)  # fmt: skip
def test_quantities_in_bytes(value: int | str, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("100m", "'100m' is not a whole number of bytes"), ("1.5", "'1.5' is not a whole number of bytes"),
     ("8Ei", "'8Ei' is larger than Kubernetes can hold"), ("-1Gi", "'-1Gi' is negative")],
)  # fmt: skip
def test_sizes_no_object_can_have_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        parse_bytes(value)


@pytest.mark.parametrize("value", ["eighteen", "18 GB", "GB", "", "1e"])
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


@pytest.mark.parametrize(
    ("value", "milli", "expected"),
    [("500m", True, 500), ("2", True, 2000), ("0.1", True, 100), ("1u", True, 1), ("12Gi", False, 12 * 2**30),
     ("100m", False, 1), ("1", False, 1), ("9Ei", False, 2**63 - 1), (3, False, 3)],
)  # fmt: skip
def test_requests_as_the_scheduler_counts_them(value: str | int, milli: bool, expected: int) -> None:
    """CPU in millicores, rounded up as MilliValue() does; the rest in whole units, rounded up as Value() does."""
    assert parse_units(value, milli) == expected


@pytest.mark.parametrize(
    ("amount", "text"), [(12 * 2**30, "12Gi"), (int(6.5 * 2**30), "6.5Gi"), (512 * 2**20, "512Mi"), (1000, "1000")]
)
def test_bytes_read_back(amount: int, text: str) -> None:
    assert format_bytes(amount) == text
