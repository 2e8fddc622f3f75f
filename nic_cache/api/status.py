"""The status page: `/status` (HTML), `/status.json` (the same numbers), `/` redirects there.

It names the images VMs pull, so by default (`status_page: token`) it asks for the admin
token: a browser gets HTTP Basic (any user name, the token as password), scripts may send
`Authorization: Bearer <token>`. `status_page: open` serves it to anyone (only on a
network that may see image names); `off` answers 404. The chart library (uPlot, MIT,
vendored under `static/`) is served without auth: it is the same file for everyone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from ..services import services
from ..statuspage import status as build_status
from ..units import format_size
from .admin import popular_images

bp = Blueprint(
    "status", __name__, template_folder="templates", static_folder="static", static_url_path="/status/static"
)
bp.add_app_template_filter(format_size, "size")
bp.add_app_template_filter(
    lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—", "when"
)
TOP_IMAGES = 10
RECENT_RUNS = 10


@bp.before_request
def require_token() -> Response | None:
    """Apply `status_page`: 404 when off, 401 with a Basic challenge without the token."""
    mode = services().config.status_page
    if mode == "off":
        return Response("the status page is off (status_page: off)\n", status=404, mimetype="text/plain")
    if mode == "open" or request.endpoint in ("status.static", "status.root"):
        return None
    token, given = services().config.admin_token, _given_token()
    if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return None
    why = "no admin_token is configured" if token is None else "the admin token is the password"
    resp = Response(f"401: {why} (status_page: token)\n", status=401, mimetype="text/plain")
    resp.headers["WWW-Authenticate"] = 'Basic realm="nic-cache status", charset="UTF-8"'
    return resp


def _given_token() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _status() -> dict[str, object]:
    svc = services()
    now = svc.store.clock()
    top = popular_images(limit=TOP_IMAGES, window=7 * 86400.0, half_life=86400.0, min_pulls=0)["images"]
    return build_status(
        svc.metrics.snapshot(), top, svc.prewarm.snapshot(), svc.prewarm.runs(None, RECENT_RUNS),
        svc.store.pulls(since=now - 86400.0), now,
    )  # fmt: skip


@bp.get("/")
def root() -> Response:
    """A browser pointed at the cache lands on its status page."""
    return redirect("/status", code=302)  # type: ignore[return-value]


@bp.get("/status")
def page() -> str:
    """The HTML page (numbers rendered on the server; the chart drawn by uPlot)."""
    return render_template("status.html", s=_status(), rendered_at=time.time())


@bp.get("/status.json")
def as_json() -> Response:
    """The page's numbers as JSON."""
    return jsonify(_status())
