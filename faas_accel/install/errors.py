"""Errors of `faas-accel install`.

InstallError
├── InvalidValue     an option or values-file entry we cannot use (names the key)
└── UnsafeToEdit     an existing file we cannot parse, so will not change
"""

from __future__ import annotations


class InstallError(Exception):
    """Base of every error raised while planning or writing an installation."""


class InvalidValue(InstallError):
    """An option or a values-file entry cannot be used."""


class UnsafeToEdit(InstallError):
    """An existing file cannot be parsed or has a shape we would have to guess about."""
