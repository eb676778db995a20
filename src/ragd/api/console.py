"""The web console: static files from the package, served at ``/`` and ``/console/*``.

The console is a single page written in plain JavaScript modules (no build step, no
third-party code) that talks to the public API only, with the same tenant rules as any
client. What this module adds is how its files are served:

* a fixed set of files, read once at startup from ``ragd/console/``: a request names a key
  of that set or gets 404, so no path reaches the file system;
* a strict Content-Security-Policy: scripts and styles from this origin only (no inline
  script or style element, no ``eval``), requests to this origin only, no frames, no
  plugins, no forms posting elsewhere;
* ``ETag`` revalidation (``no-cache``), so a new release is picked up at once.

Signed-in state lives in the page's memory and in the session cookie (see
:mod:`ragd.api.routes.session`); uploaded documents are downloaded as attachments, never
rendered here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from fastapi import FastAPI, Request, Response

from ragd.errors import NotFound
from ragd.settings import Settings

#: The console's policy. ``style-src 'self'`` still lets scripts set element styles through
#: the CSSOM (progress bars); it refuses ``style`` attributes and elements in markup.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'none'; "
    "frame-ancestors 'none'; frame-src 'none'; base-uri 'none'; object-src 'none'"
)
ASSET_PREFIX = "/console/"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every servable console file by its path under ``ragd/console`` (``pages/chat.js``)."""
    found: dict[str, Asset] = {}
    pending = [(resources.files("ragd").joinpath("console"), PurePosixPath())]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            name = prefix / entry.name
            if entry.is_dir():
                pending.append((entry, name))
                continue
            media_type = _TYPES.get(PurePosixPath(entry.name).suffix)
            if media_type is None:
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[str(name)] = Asset(body, media_type, etag)
    return found


def _serve(asset: Asset, request: Request) -> Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONSOLE_CSP,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console at ``/`` when ``settings.console`` is on."""
    if not settings.console:
        return
    assets = load_assets()
    page = assets["index.html"]

    async def index(request: Request) -> Response:
        return _serve(page, request)

    async def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        if found is None or name == "index.html":
            raise NotFound("no such console file")
        return _serve(found, request)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSET_PREFIX + "{name:path}", asset, methods=["GET"],
                      include_in_schema=False)
