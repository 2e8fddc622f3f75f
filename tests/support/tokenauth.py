"""A distribution token server on loopback: the `auth: token` realm of a real CNCF registry.

Per-repository access lists (who may pull what; some repositories anonymously), JWTs signed
with PyJWT (RS256) carrying the signing certificate in `x5c`, which the registry checks
against `rootcertbundle`. It records every token request (user, scope) so a test can see
who asked for what, and with which credentials.
"""

from __future__ import annotations

import base64
import datetime
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from faas_accel.testbed.procs import free_port

SERVICE = "test-registry"
ISSUER = "test-token-issuer"


@dataclass
class Acl:
    """Passwords and what each user (or anyone, for `public`) may pull."""

    users: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # name -> (password, repos)
    public: set[str] = field(default_factory=set)
    pusher: str | None = None  # this user gets every action asked for, on every repository


@dataclass(frozen=True)
class TokenRequest:
    user: str | None  # None: anonymous
    scope: str
    authorized: bool  # the basic credentials were right (or absent)


class TokenServer:
    """Issues tokens for a registry; `registry_auth()` is the registry's `auth:` section."""

    def __init__(self, acl: Acl, workdir: Path, host: str = "127.0.0.1") -> None:
        self.acl = acl
        self.requests: list[TokenRequest] = []
        self.port = free_port(host)
        self.realm = f"http://{host}:{self.port}/token"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip
        self.bundle = workdir / "token-root.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        app = Flask(__name__)
        app.add_url_rule("/token", view_func=self._token)
        self._server = make_server(host, self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.bundle)}}  # fmt: skip

    def _token(self) -> Response | tuple[Response, int]:
        auth = request.authorization
        scope = request.args.get("scope", "")
        user = auth.username if auth is not None and auth.type == "basic" else None
        entry = self.acl.users.get(user or "")
        ok = user is None or (entry is not None and entry[0] == (auth.password if auth else None))
        self.requests.append(TokenRequest(user, scope, ok))
        if not ok:
            return jsonify({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}), 401
        readable = self.acl.public | (entry[1] if entry else set())
        access = []
        parts = scope.split(":")
        if len(parts) == 3 and parts[0] == "repository":
            if user is not None and user == self.acl.pusher:
                access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
            elif parts[1] in readable and "pull" in parts[2]:
                access.append({"type": "repository", "name": parts[1], "actions": ["pull"]})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "iat": now, "nbf": now - 5,
                  "exp": now + 300, "jti": uuid.uuid4().hex, "access": access}  # fmt: skip
        x5c = [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": x5c})
        return jsonify({"token": token, "access_token": token, "expires_in": 300})

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
