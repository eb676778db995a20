"""The web console in a real browser (headless Chromium) against a real ``ragd serve``.

Each test signs in through the console's own forms in a fresh browser context (its own
cookies), and fails on any script error or Content-Security-Policy violation in the page.
Waits are for conditions (an element, an attribute), bounded only as hang guards.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

from tests.api.browser import chromium, screenshot_path
from tests.api.live import OPS_EMAIL, LiveServer
from tests.conftest import STRONG_PASSWORD
from tests.shared_data import EVAL, require
from tests.waiting import HANG_TIMEOUT, eventually_sync

HANG_MS = HANG_TIMEOUT * 1000
#: Ingestion of three small files, on a shared and possibly loaded machine: a hang guard.
INGEST_MS = 10 * HANG_MS
FILES = (
    "python-faq/source/faq/installed.html",
    "python-faq/source/faq-rst/extending.rst.txt",
    "debian-faq/source/faq/html/kernel.en.html",
)
_counter = itertools.count()

#: An HTML upload that would run script, load an image and fetch if it were ever rendered.
HOSTILE_HTML = b"""<!doctype html>
<html><head><title>Quokka &lt;img src=x onerror="window.__pwned='title'"&gt;</title>
<script>window.__pwned = 'script'; fetch('/pwned-script');</script></head>
<body><h1>Quokka facts</h1>
<p>The quokka is a small marsupial <img src="/pwned-img" onerror="window.__pwned='img'">
that lives on Rottnest Island, near Perth in Western Australia.</p>
<p>&lt;script&gt;window.__pwned='text'; fetch('/pwned-text')&lt;/script&gt; is shown as text.</p>
<iframe src="/pwned-frame"></iframe>
</body></html>
"""


@dataclass
class Watched:
    """A page and what went wrong in it."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert self.errors == [], self.errors


@dataclass(frozen=True)
class Account:
    email: str
    password: str = STRONG_PASSWORD


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


def open_page(browser: Browser, live: LiveServer) -> Watched:
    context = browser.new_context(base_url=live.base, accept_downloads=True)
    context.set_default_timeout(HANG_MS)
    page = context.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.type == "error" and \
                "Failed to load resource" not in message.text:
            watched.errors.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"pageerror: {error}"))
    page.on("request", lambda request: watched.requests.append(request.url))
    page.goto("/")
    return watched


def sign_in(browser: Browser, live: LiveServer, account: Account) -> Watched:
    watched = open_page(browser, live)
    page = watched.page
    page.fill("#signin-form input[name=email]", account.email)
    page.fill("#signin-form input[name=password]", account.password)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#sign-out")).to_be_visible()
    return watched


def register(browser: Browser, live: LiveServer, tenant: str) -> tuple[Watched, Account]:
    account = Account(f"console{next(_counter)}-{tenant}@example.org")
    watched = open_page(browser, live)
    page = watched.page
    page.get_by_role("button", name="Create a tenant").click()
    page.fill("#register-form input[name=email]", account.email)
    page.fill("#register-form input[name=password]", account.password)
    page.fill("#register-form input[name=tenant_name]", tenant)
    page.click("#register-form button[type=submit]")
    expect(page.locator("#sign-out")).to_be_visible()
    return watched, account


def create_collection(page: Page, name: str) -> str:
    page.goto("/#/collections")
    page.fill("#collection-form input[name=name]", name)
    page.click("#collection-form button[type=submit]")
    row = page.locator("#collections tr[data-collection-id]", has_text=name)
    expect(row).to_be_visible()
    return str(row.get_attribute("data-collection-id"))


def upload(page: Page, collection_id: str, files: list[Path]) -> None:
    page.goto(f"/#/documents?c={collection_id}")
    page.set_input_files("#file-input", [str(path) for path in files])
    for path in files:
        item = page.locator("#uploads li", has=page.locator(f"text={path.name}"))
        expect(item.locator(".progress.done")).to_be_visible(timeout=INGEST_MS)
        assert item.get_attribute("data-document-id")


def wait_ready(page: Page, count: int) -> None:
    expect(page.locator("#documents tr[data-document-id]")).to_have_count(count)
    expect(page.locator("#documents tr[data-status=ready]")).to_have_count(
        count, timeout=INGEST_MS)


def ask(page: Page, question: str) -> Locator:
    """Ask on the chat page; the assistant's message (still streaming, perhaps)."""
    page.goto("/#/chat")
    page.fill("#chat-form [name=question]", question)
    page.click("#chat-form button[type=submit]")
    return page.locator("#thread .msg.assistant").last


def search(page: Page, query: str) -> Locator:
    """Search on the search page; the hits (perhaps not shown yet)."""
    page.goto("/#/search")
    page.fill("#search-form [name=query]", query)
    page.click("#search-form button[type=submit]")
    return page.locator("#search-results [data-chunk-id]")


@dataclass(frozen=True)
class Tenant:
    account: Account
    collection_id: str


@pytest.fixture(scope="module")
def tenant(browser: Browser, live: LiveServer) -> Tenant:
    """A tenant registered through the console, with the three files uploaded and ready."""
    watched, account = register(browser, live, "console-faq")
    page = watched.page
    collection_id = create_collection(page, "FAQ")
    upload(page, collection_id, [require(EVAL / name) for name in FILES])
    wait_ready(page, len(FILES))
    page.screenshot(path=screenshot_path("documents"), full_page=True)
    watched.check()
    page.context.close()
    return Tenant(account, collection_id)


def test_uploaded_files_are_ready_with_their_chunks_and_counts(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    page.goto("/#/collections")
    row = page.locator(f"#collections tr[data-collection-id='{tenant.collection_id}']")
    expect(row).to_contain_text("ready 3")
    page.goto(f"/#/documents?c={tenant.collection_id}")
    wait_ready(page, len(FILES))
    expect(page.locator("#documents")).to_contain_text("Why is Python Installed on my Computer")
    document = page.locator("#documents tr[data-document-id]", has_text="Extending")
    document.get_by_role("button", name="Chunks").click()
    chunks = page.locator("#chunk-list article.chunk")
    expect(chunks.first).to_be_visible()
    expect(page.locator("#chunk-list .heading").first).not_to_be_empty()
    expect(page.locator("dialog .keywords").first).to_be_visible()
    page.screenshot(path=screenshot_path("chunks"), full_page=True)
    watched.check()


def test_a_reload_keeps_the_session_and_no_script_can_read_the_refresh_token(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    page.reload()
    expect(page.locator("#sign-out")).to_be_visible()
    readable = page.evaluate("document.cookie")
    assert "ragd_refresh" not in readable and "ragd_csrf=" in readable
    stored = page.evaluate("[localStorage.length, sessionStorage.length]")
    assert stored == [0, 0]
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["ragd_refresh"]["httpOnly"] and cookies["ragd_refresh"]["sameSite"] == "Strict"
    assert cookies["ragd_refresh"]["path"] == "/api/v1/auth/session"
    page.click("#sign-out")
    expect(page.locator("#signin-form")).to_be_visible()
    page.reload()
    expect(page.locator("#signin-form")).to_be_visible()
    watched.check()


def test_search_shows_the_explain_table(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    hits = search(page, "How do I extend Python with C?")
    expect(hits.first).to_be_visible()
    explain = hits.first.locator("table.explain")
    expect(explain).to_be_visible()
    headers = " ".join(explain.locator("th").all_inner_texts()).lower()
    for column in ("lexical", "dense", "fused", "rerank"):
        assert column in headers, headers
    cells = explain.locator("td").all_inner_texts()
    assert any(re.fullmatch(r"\d+", cell.strip()) for cell in cells), cells  # a rank
    page.screenshot(path=screenshot_path("search"), full_page=True)
    watched.check()


def test_chat_streams_an_answer_whose_citation_opens_the_quote(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    answer = ask(page, "Why is Python installed on my computer?")
    expect(answer).to_have_attribute("data-state", "answered")
    expect(answer).to_contain_text("extractive")  # the provider is named
    chip = answer.locator("button.chip").first
    expect(chip).to_be_visible()
    chip.click()
    dialog = page.locator("dialog[open]")
    expect(dialog.locator("mark").first).to_be_visible()
    page.screenshot(path=screenshot_path("chat-citation"), full_page=True)
    dialog.get_by_role("button", name="Close").click()
    expect(page.locator("#conversations a").first).to_be_visible()
    assert re.search(r"#/chat/[\w-]+$", page.url), page.url
    watched.check()


def test_a_question_the_documents_cannot_answer_is_shown_as_not_found(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    answer = ask(page, "What is the best recipe for lemon meringue pie?")
    expect(answer).to_have_attribute("data-state", "refused")
    expect(answer).to_have_class(re.compile(r"\brefused\b"))
    assert answer.locator("button.chip").count() == 0
    watched.check()


def test_another_tenants_collection_is_invisible(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    page.goto("/#/collections")
    expect(page.locator("#collections tr[data-collection-id]")).to_have_count(1)
    assert page.locator(f"[data-collection-id='{live.collection_id}']").count() == 0
    # Asked for by id, the other tenant's collection and document are not found either.
    page.goto(f"/#/documents?c={live.collection_id}&doc={live.document_id}")
    expect(page.locator("#collection-picker")).to_have_value(tenant.collection_id)
    expect(page.locator("#documents tr[data-document-id]")).to_have_count(len(FILES))
    assert page.locator(f"[data-document-id='{live.document_id}']").count() == 0
    assert page.locator("dialog[open]").count() == 0
    expect(search(page, "ragd answers questions from your documents").first).to_be_visible()
    assert page.locator(f"#search-results [data-document-id='{live.document_id}']").count() == 0
    assert live.document_id not in page.locator("#search-results").inner_html()
    watched.check()


def test_an_uploaded_html_file_never_runs_in_the_console(
    browser: Browser, live: LiveServer, tmp_path: Path
) -> None:
    watched, _ = register(browser, live, "console-hostile")
    page = watched.page
    collection_id = create_collection(page, "hostile")
    hostile = tmp_path / "quokka.html"
    hostile.write_bytes(HOSTILE_HTML)
    upload(page, collection_id, [hostile])
    wait_ready(page, 1)
    row = page.locator("#documents tr[data-document-id]")
    expect(row).to_contain_text("<img src=x onerror=")  # the title, as text
    row.get_by_role("button", name="Chunks").click()
    expect(page.locator("#chunk-list")).to_contain_text("<script>window.__pwned='text'")
    page.locator("dialog[open]").get_by_role("button", name="Close").click()
    with page.expect_download() as download:
        row.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == "quokka.html"
    assert Path(download.value.path()).read_bytes() == HOSTILE_HTML
    expect(search(page, "quokka marsupial Rottnest").first).to_be_visible()
    expect(ask(page, "Where does the quokka live?")).to_have_attribute(
        "data-state", re.compile("answered|refused"))
    assert page.url.startswith(live.base)
    assert page.evaluate("window.__pwned === undefined")
    assert not [url for url in watched.requests if "pwned" in url], watched.requests
    watched.check()


def test_a_failed_document_says_why_and_can_be_retried(
    browser: Browser, live: LiveServer, tmp_path: Path
) -> None:
    watched, account = register(browser, live, "console-broken")
    page = watched.page
    collection_id = create_collection(page, "broken")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage\n%%EOF\n")
    upload(page, collection_id, [broken])
    row = page.locator("#documents tr[data-document-id]")
    expect(row).to_have_attribute("data-status", "failed", timeout=INGEST_MS)
    expect(row.locator(".error")).to_contain_text("could not be read")
    document_id = str(row.get_attribute("data-document-id"))
    with httpx.Client(base_url=live.base, timeout=HANG_TIMEOUT) as client:
        token = client.post("/api/v1/auth/login", json={
            "email": account.email, "password": account.password}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        job_id = client.get(f"/api/v1/documents/{document_id}", headers=headers).json()["job_id"]
        first = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        row.get_by_role("button", name="Retry").click()
        expect(page.locator("#flash")).to_contain_text("Queued again")

        def retried() -> bool:
            job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
            return bool(job["status"] == "failed" and job["finished_at"] != first["finished_at"])

        eventually_sync(retried, timeout=INGEST_MS / 1000, what="the retried job failed again")
    expect(row).to_have_attribute("data-status", "failed")
    watched.check()


def test_a_new_api_key_is_shown_once(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    page.goto("/#/access")
    page.get_by_label("Name").first.fill("ci key")
    page.get_by_role("button", name=re.compile("Create.*key", re.I)).click()
    secret = page.locator("#new-key")
    expect(secret).to_be_visible()
    key = secret.locator("code").inner_text().strip()
    assert len(key) > 20
    page.goto("/#/collections")
    page.goto("/#/access")
    expect(page.get_by_text("ci key").first).to_be_visible()
    assert key not in page.content()
    watched.check()


def test_the_operations_dashboard_plots_live_data(browser: Browser, live: LiveServer) -> None:
    watched = sign_in(browser, live, Account(OPS_EMAIL))
    page = watched.page
    page.goto("/#/ops")
    plot = page.locator("#rss-plot")
    expect(plot).to_be_visible()
    # It refreshes by itself: each refresh samples memory again, so the series grows.
    expect(plot).to_have_attribute("data-points", re.compile(r"^([3-9]|\d{2,})$"),
                                   timeout=INGEST_MS)
    path = plot.locator("path.series")
    assert len(str(path.get_attribute("d"))) > 10
    expect(plot.locator(".soft")).to_have_count(1)
    expect(plot.locator(".emergency")).to_have_count(1)
    expect(page.locator("#models-table")).to_contain_text("embedder")
    expect(page.locator("#startup")).to_contain_text("app_ready")
    expect(page.locator("#providers-table")).to_be_visible()
    expect(page.locator("#report")).not_to_be_empty()
    # A cleanup run from the dashboard is listed and marked on the plot.
    page.get_by_role("button", name="Soft cleanup").click()
    expect(plot.locator("g.event").first).to_be_attached(timeout=INGEST_MS)
    expect(page.locator("#memory")).to_contain_text("soft")
    page.screenshot(path=screenshot_path("operations"), full_page=True)
    watched.check()


def test_operations_are_not_offered_to_tenant_users(
    browser: Browser, live: LiveServer, tenant: Tenant
) -> None:
    watched = sign_in(browser, live, tenant.account)
    page = watched.page
    assert page.locator("#nav a", has_text="Operations").count() == 0
    page.goto("/#/ops")
    expect(page.locator("#view")).to_have_attribute("data-page", "collections")
    watched.check()
