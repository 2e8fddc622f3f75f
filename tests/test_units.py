"""Tests for nic_cache.units: byte sizes, durations and bit rates as written in config files."""

from __future__ import annotations

import pytest

from nic_cache.units import format_size, parse_duration, parse_rate, parse_size


class TestParseSize:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (0, 0),
            (1234, 1234),
            ("1234", 1234),
            ("10B", 10),
            ("1K", 1000),
            ("1kb", 1000),
            ("500MB", 500 * 1000**2),
            ("1.5G", 1_500_000_000),
            ("2T", 2 * 1000**4),
            ("1P", 1000**5),
            ("1Ki", 1024),
            ("1KiB", 1024),
            ("20GiB", 20 * 1024**3),
            ("20gib", 20 * 1024**3),
            (" 3 MiB ", 3 * 1024**2),
            ("1TiB", 1024**4),
            ("0.5KiB", 512),
        ],
        ids=[
            "zero",
            "int",
            "digits",
            "bytes",
            "k",
            "kb-lower",
            "mb",
            "fractional-g",
            "t",
            "p",
            "ki",
            "kib",
            "gib",
            "lowercase",
            "spaces",
            "tib",
            "fractional-kib",
        ],
    )
    def test_valid(self, value: object, expected: int) -> None:
        """Decimal and binary units give the byte count they name."""
        assert parse_size(value) == expected

    @pytest.mark.parametrize(
        "value",
        [-1, True, 1.5, None, "", "GiB", "10 XB", "10iB", "1e9", "-5MB", "5 M B", [1]],
        ids=[
            "negative",
            "bool",
            "float",
            "none",
            "empty",
            "unit-only",
            "unknown-unit",
            "i-without-prefix",
            "exponent",
            "negative-text",
            "split-unit",
            "list",
        ],
    )
    def test_invalid(self, value: object) -> None:
        """Anything else is a ValueError with an example of what to write."""
        with pytest.raises(ValueError, match="size"):
            parse_size(value)


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (0, 0.0),
            (30, 30.0),
            (2.5, 2.5),
            ("30s", 30.0),
            ("15m", 900.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("250ms", 0.25),
            ("1m500ms", 60.5),
            ("7d", 7 * 86400.0),
            ("2w", 14 * 86400.0),
            ("1.5h", 5400.0),
            (" 5m ", 300.0),
        ],
        ids=[
            "zero",
            "int",
            "float",
            "seconds",
            "minutes",
            "hours",
            "compound",
            "millis",
            "minutes-and-millis",
            "days",
            "weeks",
            "fractional",
            "spaces",
        ],
    )
    def test_valid(self, value: object, expected: float) -> None:
        """Numbers are seconds and unit strings sum their parts."""
        assert parse_duration(value) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("value", "expected"), [("300", 300.0), ("2.5", 2.5)], ids=["integer-text", "float-text"]
    )
    def test_plain_number_text_is_seconds(self, value: str, expected: float) -> None:
        """A plain number written as text (an env override, a ${VAR}) is seconds, as documented."""
        assert parse_duration(value) == expected

    @pytest.mark.parametrize(
        "value",
        [-1, -0.5, True, None, "", "5x", "m", "-5s", "1h 30m", "1h30"],
        ids=[
            "negative",
            "negative-float",
            "bool",
            "none",
            "empty",
            "unknown-unit",
            "unit-only",
            "negative-text",
            "inner-space",
            "trailing-number",
        ],
    )
    def test_invalid(self, value: object) -> None:
        """Anything else is a ValueError with an example of what to write."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(value)


class TestParseRate:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (0, 0),
            (1000, 1000),
            ("100", 100),
            ("400Mbit", 400_000_000),
            ("1gbit", 1_000_000_000),
            ("200mbps", 200_000_000),
            ("10kbit", 10_000),
            ("1.5Gbit", 1_500_000_000),
            ("2Tbit", 2 * 10**12),
            (" 8 mbit ", 8_000_000),
        ],
        ids=["zero", "int", "digits", "mbit", "gbit-lower", "mbps", "kbit", "fractional", "tbit", "spaces"],
    )
    def test_valid(self, value: object, expected: int) -> None:
        """Rates are bits per second with decimal prefixes."""
        assert parse_rate(value) == expected

    @pytest.mark.parametrize(
        "value",
        [-1, True, 1.5, None, "", "fast", "10xbit", "-1mbit"],
        ids=["negative", "bool", "float", "none", "empty", "word", "unknown-prefix", "negative-text"],
    )
    def test_invalid(self, value: object) -> None:
        """Anything else is a ValueError with an example of what to write."""
        with pytest.raises(ValueError, match="bit rate"):
            parse_rate(value)


class TestFormatSize:
    @pytest.mark.parametrize(
        ("n", "text"),
        [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 * 1024**2, "5.0 MiB"),
            (20 * 1024**3, "20.0 GiB"),
            (3 * 1024**4, "3.0 TiB"),
            (2048 * 1024**4, "2048.0 TiB"),
        ],
        ids=["zero", "bytes", "one-kib", "fractional", "mib", "gib", "tib", "beyond-tib"],
    )
    def test_formats(self, n: int, text: str) -> None:
        """Byte counts are shown in the largest binary unit below 1024, TiB at most."""
        assert format_size(n) == text

    @pytest.mark.parametrize("text", ["20GiB", "1KiB", "512MiB"], ids=["gib", "kib", "mib"])
    def test_round_trips_through_parse_size(self, text: str) -> None:
        """What format_size prints (without the space) parses back to the same count."""
        n = parse_size(text)
        assert parse_size(format_size(n).replace(" ", "").replace(".0", "")) == n
