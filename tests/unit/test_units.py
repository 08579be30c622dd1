"""Sizes: one meaning for every size a user types (docker's RAMInBytes, all binary),
a separate, caller-chosen meaning for sizes another program printed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.envs.container import docker_size_bytes
from memgap.errors import UsageError
from memgap.units import format_bytes, parse_reported_size, parse_size

KiB, MiB, GiB, TiB, PiB = (1024**i for i in range(1, 6))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        ("64k", 64 * KiB),
        ("64kb", 64 * KiB),
        ("64KiB", 64 * KiB),
        ("512m", 536_870_912),
        ("512M", 536_870_912),
        ("512mb", 536_870_912),
        ("512MB", 536_870_912),  # binary, as `docker run --memory 512MB` reads it
        ("512MiB", 536_870_912),
        ("512mib", 536_870_912),
        ("1g", 1_073_741_824),
        ("2GB", 2_147_483_648),
        ("37.26GiB", 40_007_620_362),  # 40007620362.24: the fraction of a byte is dropped
        ("1.5G", 1_610_612_736),
        ("3t", 3 * TiB),
        ("3TB", 3 * TiB),
        ("2p", 2 * PiB),
        ("2PiB", 2 * PiB),
        ("1e9", 1_000_000_000),  # a decimal gigabyte is written as a number
        ("1E3k", 1_024_000),
        (".5k", 512),
        ("5.", 5),
        ("0.1k", 102),  # 102.4
        ("512 m", 536_870_912),  # go-units splits at one space
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_typed_size_in_bytes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_512m_is_the_same_bytes_from_every_flag() -> None:
    assert parse_size("512m", what="--memory-limit") == docker_size_bytes("512m", what="--memory") == 512 * 2**20


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "cannot read ''"),
        ("lots", "cannot read 'lots'"),
        ("12zz", "unknown unit 'zz' in '12zz'"),
        ("5ib", "unknown unit 'ib'"),
        ("5ki", "unknown unit 'ki'"),
        ("5kbb", "unknown unit 'kbb'"),
        ("-1", "'-1' is negative"),
        ("-512m", "'-512m' is negative"),
        ("512  m", "more than one space"),
        (" 512m", "cannot read ' 512m'"),  # docker refuses it too, and gets the text as typed
        ("1.5.5g", "cannot read"),
        ("9223372036854775808", "too large"),
        ("8192p", "too large"),
        ("1e999999999", "too large"),
        ("0x10", "cannot read '0x10'"),
    ],
)
def test_bad_size_is_one_line_naming_flag_and_text(text: str, words: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_size(text, what="--memory-limit")
    msg = str(e.value)
    assert msg.startswith("--memory-limit: ") and words in msg and "\n" not in msg


def test_tiny_exponent_is_zero_bytes_without_huge_arithmetic() -> None:
    assert parse_size("1e-999999999p") == 0
    assert parse_size("0e999999999") == 0


def _go_units_ram_in_bytes(number: str, unit: str) -> int:
    # What docker computes (go-units size.go parseSize): float64(number) * multiplier,
    # then int64(), which truncates.
    return int(float(number) * {"": 1, "k": KiB, "m": MiB, "g": GiB}[unit])


@given(st.integers(min_value=0, max_value=9_999_999), st.integers(min_value=0, max_value=3),
       st.sampled_from(["", "k", "m", "g"]))
def test_typed_sizes_match_docker_to_the_byte(digits: int, decimals: int, unit: str) -> None:
    # Up to 9999.999g: float64 rounding cannot cross a whole byte below 2**53 / 5**3
    # bytes, so exact and float arithmetic must agree here, byte for byte.
    s = str(digits).rjust(decimals + 1, "0")
    number = f"{s[:-decimals]}.{s[-decimals:]}" if decimals else s
    assert parse_size(f"{number}{unit}") == _go_units_ram_in_bytes(number, unit)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_a_byte_count_reads_back_exactly(n: int) -> None:
    assert parse_size(f"{n}b") == n
    assert parse_size(str(n)) == n


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["k", "m", "g", "t", "p"]),
       st.sampled_from(["", "b", "ib"]))
def test_every_prefix_spelling_scales_by_1024(n: int, prefix: str, suffix: str) -> None:
    factor = 1024 ** ("kmgtp".index(prefix) + 1)
    unit = prefix + suffix
    if n * factor > 2**63 - 1:
        with pytest.raises(UsageError):
            parse_size(f"{n}{unit}")
        return
    for spelled in (unit, unit.upper(), unit.capitalize()):
        assert parse_size(f"{n}{spelled}") == n * factor


@given(st.text(max_size=80))
def test_garbage_raises_only_usage_error(text: str) -> None:
    for parse in (parse_size, docker_size_bytes):
        try:
            n = parse(text)
        except UsageError:
            continue
        assert 0 <= n <= 2**63 - 1
    for decimal_gb in (True, False):
        try:
            n = parse_reported_size(text, decimal_gb=decimal_gb)
        except UsageError:
            continue
        assert 0 <= n <= 2**63 - 1


@given(st.from_regex(r"[0-9.eE+\- ]{0,20}[kKmMgGtTpPiIbB]{0,4}", fullmatch=True))
def test_near_miss_text_raises_only_usage_error(text: str) -> None:
    try:
        parse_size(text)
    except UsageError:
        pass


# ------------------------------------------------------------ printed by a program


@pytest.mark.parametrize(
    ("text", "decimal_gb", "expected"),
    [
        ("68.54MiB", True, round(68.54 * MiB)),  # docker stats (go-units BytesSize)
        ("23.54GiB", False, round(23.54 * GiB)),  # binary whatever the printer's GB
        ("71.44MB", True, 71_440_000),  # podman stats (go-units HumanSize)
        ("25.28GB", True, 25_280_000_000),
        ("1.5GB", False, round(1.5 * GiB)),  # SGLang's "GB" is 2**30
        ("512kB", True, 512_000),
        ("512k", False, 512 * KiB),
        (" 0B ", True, 0),
        ("1e9", True, 10**9),
        ("12 MB", True, 12_000_000),
    ],
)
def test_reported_size_in_bytes(text: str, decimal_gb: bool, expected: int) -> None:
    assert parse_reported_size(text, decimal_gb=decimal_gb) == expected


@pytest.mark.parametrize(("text", "words"), [("", "cannot read"), ("--", "cannot read"), ("5 zz", "unknown unit"),
                                             ("1e999GB", "too large"), ("-5MB", "cannot read")])
def test_unreadable_reported_size_is_a_usage_error(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as e:
        parse_reported_size(text, decimal_gb=True, what="docker stats")
    assert str(e.value).startswith("docker stats: ") and repr(text) in str(e.value)


def test_typed_and_reported_mb_differ_only_where_the_printer_says_so() -> None:
    assert parse_size("100MB") == parse_reported_size("100MB", decimal_gb=False) == 100 * MiB
    assert parse_reported_size("100MB", decimal_gb=True) == 100 * 10**6


# ------------------------------------------------------------------- printing


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (512 * MiB, "512.0 MiB"),
     (int(37.26 * GiB), "37.3 GiB"), (-2 * GiB, "-2.0 GiB"), (5 * PiB, "5120.0 TiB")],
)
def test_format_bytes(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


@given(st.integers(min_value=0, max_value=2**50))
def test_format_bytes_reads_back_within_its_rounding(n: int) -> None:
    text = format_bytes(n, precision=3).replace(" ", "")
    assert math.isclose(parse_size(text), n, rel_tol=1e-3, abs_tol=2)
