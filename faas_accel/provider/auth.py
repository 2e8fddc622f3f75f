"""Basic auth as faas-provider's `auth.DecorateWithBasicAuth` does it, for `/system/*`."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from werkzeug.datastructures import Authorization

REALM_HEADER = 'Basic realm="Restricted"'


@dataclass(frozen=True)
class Credentials:
    """The one user and password the provider accepts."""

    user: str
    password: str

    def check(self, auth: Authorization | None) -> bool:
        """True if `auth` is Basic with exactly these credentials (constant-time compare)."""
        if auth is None or auth.type != "basic":
            return False
        user_ok = hmac.compare_digest((auth.username or "").encode(), self.user.encode())
        password_ok = hmac.compare_digest((auth.password or "").encode(), self.password.encode())
        return user_ok and password_ok

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=<hidden>)"


def load_credentials(user: str, password_file: Path) -> Credentials:
    """`user` and the password read from `password_file` (surrounding whitespace trimmed,
    as faasd reads its basic-auth-password file)."""
    password = password_file.read_text().strip()
    if not password:
        raise ValueError(f"{password_file} holds no password")
    return Credentials(user, password)
