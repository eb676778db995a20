"""The console's files as the server serves them: a fixed set from the package, a strict
Content-Security-Policy, revalidation, and code that keeps to the rules the policy and the
token handling rely on (checked in the source, since a browser test cannot prove absence)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from ragd.api.console import CONSOLE_CSP, load_assets
from ragd.app import create_app
from tests.conftest import assert_error, make_settings, running

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "ragd" / "console"
#: The console is hand-written and small; a page of a 2-core box loads it at once.
ASSET_BUDGET_BYTES = 250_000


def directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


async def test_the_console_is_served_at_the_root_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    # Every script is a file of this origin: no inline script, no handler attributes.
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script type="module" src="/console/app.js">']
    assert not re.search(r"<script[^>]*>(?!</script>)", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and "style=" not in html
    assert "http://" not in html and "https://" not in html


async def test_assets_are_revalidated_by_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/console/app.js")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["cache-control"] == "no-cache"
    again = await client.get("/console/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    css = await client.get("/console/style.css")
    assert css.headers["content-type"].startswith("text/css")


async def test_only_the_packaged_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/console/nope.js", "/console/../app.py", "/console/..%2F..%2Fsettings.py",
                 "/console/%2e%2e/api/console.py", "/console/pages/", "/console/index.html",
                 "/console/"):
        assert_error(await client.get(path), 404)


async def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    async with running(create_app(make_settings(tmp_path / "data", console=False))) as client:
        assert_error(await client.get("/"), 404)
        assert_error(await client.get("/console/app.js"), 404)
        assert (await client.get("/health/live")).status_code == 200


def test_every_module_the_console_imports_is_served() -> None:
    assets = load_assets()
    for name, asset in assets.items():
        if not name.endswith(".js"):
            continue
        text = asset.body.decode()
        for target in re.findall(r"""(?:from|import)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""", text):
            resolved = (Path("/") / name).parent.joinpath(target).resolve()
            assert str(resolved).lstrip("/") in assets, f"{name} imports missing {target}"
    html = assets["index.html"].body.decode()
    for ref in re.findall(r'(?:src|href)="/console/([^"]+)"', html):
        assert ref in assets, ref


def test_the_console_code_keeps_to_the_rules() -> None:
    """No markup from strings (documents and answers are text), no eval, no storage a page
    script could read a token from, no inline styles the policy would refuse, no network
    beyond this origin."""
    forbidden = {
        r"\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write": "markup from strings",
        r"\beval\(|new Function\(|setTimeout\(\s*[\"']": "code from strings",
        r"localStorage|sessionStorage|indexedDB": "web storage",
        r"setAttribute\(\s*[\"']style[\"']|\.style\.cssText": "inline style attribute",
        r"https?://(?!www\.w3\.org/2000/svg\b)": "another origin",
    }
    for path in CONSOLE.rglob("*.js"):
        text = path.read_text(encoding="utf-8")
        for pattern, why in forbidden.items():
            assert not re.search(pattern, text), f"{path.name}: {why} ({pattern})"


def test_the_console_is_small() -> None:
    total = sum(len(asset.body) for asset in load_assets().values())
    assert total < ASSET_BUDGET_BYTES, f"console assets grew to {total} bytes"


def test_the_policy_allows_no_inline_code() -> None:
    policy = directives(CONSOLE_CSP)
    for name in ("script-src", "style-src", "default-src", "connect-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "blob:"} & set(policy[name])
