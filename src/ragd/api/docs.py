"""Interactive API docs (``/docs`` Swagger UI, ``/redoc`` ReDoc) served from local files.

FastAPI's own pages load their scripts from a CDN and start them with an inline script: they
break offline, and a Content-Security-Policy for them must allow ``'unsafe-inline'``
scripts. These pages hold no script of their own: every script is a file this server
serves under ``/docs/assets/``:

* the vendor bundles, read from the ``fastapi-offline`` wheel's static directory (its files
  only: its app class is not used), which pins one Swagger UI and one ReDoc build;
* two small start-up scripts of ours, ``docs_assets/swagger-init.js`` and
  ``redoc-init.js``, which read the schema URL from a ``data-`` attribute of the page.

The asset route serves a fixed set of names, each mapped to a file found at startup: a
request names a key of that set or gets 404, so no part of a URL reaches the file system.
The files are streamed from disk rather than held in memory (2.8 MB of scripts that most
processes never serve).

The pages and their assets follow the switch ``/openapi.json`` follows,
``settings.serves_api_docs`` (production: off unless ``api_docs = true``): when it is off,
none of these routes exist and each path is an ordinary 404.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragd.errors import ConfigurationError
from ragd.settings import Settings

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"

_COMMON_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
#: Swagger UI sets element styles inline, hence ``style-src 'unsafe-inline'``; scripts come
#: from this origin only (no inline script, no ``eval``).
SWAGGER_CSP = _COMMON_CSP
#: ReDoc also runs its search index in a worker it builds from a ``blob:`` URL. Its sidebar
#: asks cdn.redoc.ly for a logo: the policy refuses it (a console message) and ReDoc then
#: drops the image, so the page stays offline.
REDOC_CSP = _COMMON_CSP + "; worker-src blob:"

_JS = "text/javascript; charset=utf-8"
#: Vendor files change only with the fastapi-offline version; ours with each ragd release.
_VENDOR_CACHE = "public, max-age=86400"
_OWN_CACHE = "no-cache"
#: Name served under ``/docs/assets/`` -> media type, for the two directories.
VENDOR_FILES = {
    "swagger-ui-bundle.js": _JS,
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": _JS,
    "favicon.png": "image/png",
}
OWN_FILES = {
    "swagger-init.js": _JS,
    "redoc-init.js": _JS,
    "NOTICE": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One servable file: where it is and how it is answered."""

    path: Path
    media_type: str
    cache_control: str


def _directory(package: str, name: str) -> Path:
    try:
        found = resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        found = None
    if not isinstance(found, Path) or not found.is_dir():
        raise ConfigurationError(
            f"the API docs need the directory {name}/ of the package {package} on disk; "
            "reinstall ragd (`make install`), or set RAGD_API_DOCS=false"
        )
    return found


def load_assets() -> dict[str, Asset]:
    """Every servable file by its name; :class:`ConfigurationError` when one is missing."""
    found: dict[str, Asset] = {}
    sources = (
        (_directory("fastapi_offline", "static"), VENDOR_FILES, _VENDOR_CACHE),
        (_directory("ragd.api", "docs_assets"), OWN_FILES, _OWN_CACHE),
    )
    for directory, names, cache_control in sources:
        for name, media_type in names.items():
            path = directory / name
            if not path.is_file():
                raise ConfigurationError(f"the API docs need {path}, which is missing")
            found[name] = Asset(path, media_type, cache_control)
    return found


def _page(title: str, head: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def swagger_html(title: str, openapi_url: str, assets: str) -> str:
    """The ``/docs`` page: Swagger UI over ``openapi_url``, its files under ``assets``."""
    a, url = html.escape(assets), html.escape(openapi_url)
    return _page(
        f"{title} API - Swagger UI",
        f'<link rel="icon" type="image/png" href="{a}/favicon.png">\n'
        f'<link rel="stylesheet" href="{a}/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{url}"></div>\n'
        f'<script src="{a}/swagger-ui-bundle.js" defer></script>\n'
        f'<script src="{a}/swagger-init.js" defer></script>\n',
    )


def redoc_html(title: str, openapi_url: str, assets: str) -> str:
    """The ``/redoc`` page: ReDoc over ``openapi_url``, its files under ``assets``."""
    a, url = html.escape(assets), html.escape(openapi_url)
    return _page(
        f"{title} API - ReDoc",
        f'<link rel="icon" type="image/png" href="{a}/favicon.png">\n'
        "<style>body { margin: 0; padding: 0; }</style>\n",
        f'<div id="redoc" data-openapi-url="{url}"></div>\n'
        f'<script src="{a}/redoc.standalone.js" defer></script>\n'
        f'<script src="{a}/redoc-init.js" defer></script>\n',
    )


def install_api_docs(app: FastAPI, settings: Settings) -> None:
    """Serve ``/docs``, ``/redoc`` and ``/docs/assets/<name>`` when
    ``settings.serves_api_docs`` (and the app serves its schema)."""
    openapi_url = app.openapi_url
    if not settings.serves_api_docs or openapi_url is None:
        return
    assets = load_assets()
    title = app.title

    def urls(request: Request) -> tuple[str, str]:
        # Behind a proxy that mounts the app under a prefix (uvicorn --root-path).
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return root + openapi_url, root + ASSETS_PATH

    async def swagger(request: Request) -> HTMLResponse:
        return HTMLResponse(swagger_html(title, *urls(request)),
                            headers={"Content-Security-Policy": SWAGGER_CSP})

    async def redoc(request: Request) -> HTMLResponse:
        return HTMLResponse(redoc_html(title, *urls(request)),
                            headers={"Content-Security-Policy": REDOC_CSP})

    async def asset(name: str) -> FileResponse:
        found = assets.get(name)
        if found is None:
            raise StarletteHTTPException(status_code=404)  # as for any unknown path
        return FileResponse(found.path, media_type=found.media_type,
                            headers={"Cache-Control": found.cache_control})

    app.add_api_route(DOCS_PATH, swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSETS_PATH + "/{name}", asset, methods=["GET"], include_in_schema=False)
