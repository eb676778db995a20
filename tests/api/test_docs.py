"""The interactive API docs (``/docs``, ``/redoc``): local files only, a strict CSP, the same
switch as ``/openapi.json``; and the OpenAPI document of the first-answer path (register or
log in, create a collection, upload, follow the job, search, chat) explains itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from ragd.api import docs, payloads, schemas
from ragd.api.routes import chat, search
from ragd.app import create_app
from ragd.auth.passwords import check_password
from tests.conftest import TEST_SECRET, assert_error, make_settings, running

PAGES = ["/docs", "/redoc"]
#: Every operation a new user meets before the first answer.
FIRST_ANSWER = [
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/api-keys"),
    ("post", "/api/v1/collections"),
    ("post", "/api/v1/documents"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/documents/{document_id}"),
    ("post", "/api/v1/search"),
    ("post", "/api/v1/chat"),
]
#: Their request bodies, whose examples must pass the server's own validation.
REQUEST_MODELS: list[type[BaseModel]] = [
    schemas.RegisterIn, schemas.LoginIn, schemas.ApiKeyCreateIn, payloads.CollectionIn,
    payloads.TextDocumentIn, search.SearchIn, chat.ChatIn,
]


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside ``<script>``."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def _directives(policy: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            found[words[0]] = words[1:]
    return found


def _asset_urls(page: str) -> list[str]:
    return [attrs[name] or "" for _, attrs in _parse(page).tags
            for name in ("src", "href") if name in attrs]


# -- the pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
async def test_page_runs_only_scripts_served_from_docs_assets(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    parsed = _parse(page)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert len(scripts) == 2, page  # the vendor bundle and our start-up script
    for attrs in scripts:
        assert (attrs.get("src") or "").startswith(f"{docs.ASSETS_PATH}/"), attrs
    assert "".join(parsed.script_text).strip() == "", "inline script"
    handlers = [(tag, name) for tag, attrs in parsed.tags for name in attrs
                if name.startswith("on")]
    assert handlers == [], "inline event handlers"
    assert not re.search(r"https?://|//cdn|javascript:", page, re.IGNORECASE), page
    assert all(url.startswith(f"{docs.ASSETS_PATH}/") for url in _asset_urls(page)), page
    ids = {attrs.get("id"): attrs for _, attrs in parsed.tags if attrs.get("id")}
    root = ids["swagger-ui" if path == "/docs" else "redoc"]
    assert root.get("data-openapi-url") == "/openapi.json"


@pytest.mark.parametrize("path", PAGES)
async def test_every_file_a_page_names_is_served_with_its_type(
    client: httpx.AsyncClient, path: str
) -> None:
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    urls = _asset_urls((await client.get(path)).text)
    assert len(urls) >= 3
    for url in urls:
        response = await client.get(url)
        assert response.status_code == 200, url
        suffix = Path(url).suffix
        assert response.headers["content-type"].split(";")[0] == expected[suffix], url
        assert int(response.headers["content-length"]) == len(response.content)
        assert len(response.content) > (100_000 if "swagger-ui" in url or "redoc." in url
                                        else 200), url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] in ("public, max-age=86400", "no-cache")


async def test_start_up_scripts_configure_the_viewers(client: httpx.AsyncClient) -> None:
    swagger = (await client.get(f"{docs.ASSETS_PATH}/swagger-init.js")).text
    assert "SwaggerUIBundle(" in swagger and "dataset.openapiUrl" in swagger
    assert re.search(r"persistAuthorization:\s*false", swagger)
    assert re.search(r"validatorUrl:\s*null", swagger)  # no badge fetched from elsewhere
    assert re.search(r"queryConfigEnabled:\s*false", swagger)
    redoc = (await client.get(f"{docs.ASSETS_PATH}/redoc-init.js")).text
    assert "Redoc.init(" in redoc and "dataset.openapiUrl" in redoc
    for text in (swagger, redoc):
        assert not re.search(r"https?://", text)


async def test_vendor_bundles_are_what_the_notice_names(client: httpx.AsyncClient) -> None:
    notice = (await client.get(f"{docs.ASSETS_PATH}/NOTICE")).text
    swagger = (await client.get(f"{docs.ASSETS_PATH}/swagger-ui-bundle.js")).text
    redoc = (await client.get(f"{docs.ASSETS_PATH}/redoc.standalone.js")).text
    swagger_version = re.search(r'PACKAGE_VERSION:"([0-9.]+)"', swagger)
    redoc_version = re.search(r'" ReDoc Version: ","([0-9.]+)"', redoc)
    assert swagger_version and f"Swagger UI {swagger_version[1]}" in notice
    assert redoc_version and f"ReDoc {redoc_version[1]}" in notice
    assert "Apache" in notice and "MIT" in notice and "fastapi-offline 1.7.7" in notice


@pytest.mark.parametrize("path", PAGES)
async def test_page_policy_runs_scripts_from_this_origin_only(
    client: httpx.AsyncClient, path: str
) -> None:
    policy = (await client.get(path)).headers["content-security-policy"]
    directives = _directives(policy)
    assert directives["script-src"] == ["'self'"]
    assert "'unsafe-eval'" not in policy
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-inline'" not in directives.get("default-src", [])
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["img-src"] == ["'self'", "data:"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    if path == "/redoc":  # its search index runs in a worker made from a blob: URL
        assert directives["worker-src"] == ["blob:"]
    else:
        assert "worker-src" not in directives
    assert not re.search(r"https?:|\*", policy), policy


@pytest.mark.parametrize("name", [
    "docs.py", "nope.js", "..%2Fdocs.py", "..%2F..%2Fsettings.py", "%2Fetc%2Fpasswd",
    "swagger-ui-bundle.js%00", "SWAGGER-UI.CSS", "__init__.py", "core.py",
])
async def test_only_the_listed_files_are_served(client: httpx.AsyncClient, name: str) -> None:
    assert_error(await client.get(f"{docs.ASSETS_PATH}/{name}"), 404)


async def test_assets_need_a_name(client: httpx.AsyncClient) -> None:
    for path in (docs.ASSETS_PATH, f"{docs.ASSETS_PATH}/", f"{docs.ASSETS_PATH}/a/b.js"):
        assert_error(await client.get(path), 404)


def test_the_allow_list_names_files_that_exist() -> None:
    assets = docs.load_assets()
    assert set(assets) == set(docs.VENDOR_FILES) | set(docs.OWN_FILES)
    for name, asset in assets.items():
        assert asset.path.is_file() and asset.path.name == name
    own = {asset.path.parent for name, asset in assets.items() if name in docs.OWN_FILES}
    (directory,) = own
    assert sorted(p.name for p in directory.iterdir()) == sorted(docs.OWN_FILES), (
        "docs_assets/ is a data directory: every file in it is listed, and no .py files")


# -- the switch --------------------------------------------------------------------------------

SWITCHED = ["/docs", "/redoc", "/openapi.json", f"{docs.ASSETS_PATH}/swagger-ui-bundle.js",
            f"{docs.ASSETS_PATH}/swagger-init.js"]


async def test_production_serves_no_docs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", jwt_secret=TEST_SECRET)
    assert not settings.serves_api_docs
    async with running(create_app(settings)) as client:
        for path in SWITCHED:
            assert_error(await client.get(path), 404)


async def test_production_serves_the_docs_when_turned_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", jwt_secret=TEST_SECRET, api_docs=True)
    async with running(create_app(settings)) as client:
        for path in SWITCHED:
            assert (await client.get(path)).status_code == 200, path


async def test_development_docs_can_be_turned_off(tmp_path: Path) -> None:
    async with running(create_app(make_settings(tmp_path, api_docs=False))) as client:
        for path in SWITCHED:
            assert_error(await client.get(path), 404)


async def test_pages_follow_the_root_path(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    transport = httpx.ASGITransport(app=app, root_path="/ragd")
    async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as client:
        page = (await client.get("/ragd/docs")).text
    assert 'data-openapi-url="/ragd/openapi.json"' in page
    assert '<script src="/ragd/docs/assets/swagger-init.js"' in page


# -- the first-answer path in the OpenAPI document -------------------------------------------


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app: FastAPI = create_app(make_settings(tmp_path_factory.mktemp("spec") / "data"))
    return app.openapi()


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = spec["components"]["schemas"][name]
    return node


def _properties(spec: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    schema = _resolve(spec, schema)
    yield from schema.get("properties", {}).items()


def _has_example(spec: dict[str, Any], operation: dict[str, Any]) -> bool:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if media.get("example") is not None or media.get("examples"):
            return True
        if _resolve(spec, media.get("schema", {})).get("examples"):
            return True
    return any(
        parameter.get("examples") or parameter.get("example") is not None
        or parameter.get("schema", {}).get("examples")
        for parameter in operation.get("parameters", [])
    )


@pytest.mark.parametrize(("method", "path"), FIRST_ANSWER)
def test_first_answer_operation_explains_itself(
    spec: dict[str, Any], method: str, path: str
) -> None:
    operation = spec["paths"][path][method]
    description = operation.get("description", "")
    assert len(description) > 200, f"{method} {path}: {description!r}"
    assert "Next:" in description, f"{method} {path} does not say what comes next"
    assert _has_example(spec, operation), f"{method} {path} has no request example"
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
        properties = dict(_properties(spec, media["schema"]))
        assert properties, (path, media_type)
        missing = [name for name, schema in properties.items()
                   if not schema.get("description")]
        assert missing == [], f"{method} {path} ({media_type}): no description for {missing}"
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            assert parameter.get("examples"), (path, parameter["name"])


@pytest.mark.parametrize("name", [
    "TokenOut", "RegisterOut", "UserOut", "TenantOut", "ApiKeyCreatedOut", "CollectionOut",
    "DocumentAccepted", "DocumentOut", "JobDetail", "Progress", "SearchOut", "SearchHitOut",
    "ChatOut", "CitationOut",
])
def test_main_responses_describe_their_fields(spec: dict[str, Any], name: str) -> None:
    properties = spec["components"]["schemas"][name]["properties"]
    missing = [field for field, schema in properties.items() if not schema.get("description")]
    assert missing == [], f"{name}: no description for {missing}"


@pytest.mark.parametrize("model", REQUEST_MODELS, ids=lambda m: m.__name__)
def test_request_examples_are_valid(spec: dict[str, Any], model: type[BaseModel]) -> None:
    examples = spec["components"]["schemas"][model.__name__]["examples"]
    assert examples
    for example in examples:
        model.model_validate(example)  # the server's own rules, strict mode included


def test_register_example_passes_the_password_policy(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    policy = make_settings(tmp_path).auth
    for example in spec["components"]["schemas"]["RegisterIn"]["examples"]:
        email = example["email"]
        check_password(  # what AuthService.register asks of a new password
            example["password"], min_length=policy.password_min_length,
            min_score=policy.password_min_score,
            user_inputs=[email, email.split("@")[0], example["tenant_name"]],
        )


def test_example_ids_look_like_real_ids(spec: dict[str, Any]) -> None:
    """Ids in examples have the shape of the ids the server makes (UUID4 text)."""
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and re.fullmatch(r"[0-9a-fA-F-]{30,40}", node):
            found.append(node)

    for method, path in FIRST_ANSWER:
        walk(spec["paths"][path][method])
    for model in REQUEST_MODELS:
        walk(spec["components"]["schemas"][model.__name__]["examples"])
    assert len(found) >= 5
    assert [value for value in found if not uuid.match(value)] == []
