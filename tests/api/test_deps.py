"""Routes depend on the one thing they need, never on the whole container."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ragd.api import deps
from ragd.app import create_app
from tests.conftest import make_settings


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router, unflattened
        if included is not None:
            yield from _api_routes(included.routes)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def test_only_the_narrow_dependencies_read_the_container(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))
    routes = list(_api_routes(app.routes))
    assert len(routes) > 40
    wrong = sorted({
        f"{route.path}: {getattr(dependant.call, '__qualname__', dependant.call)}"
        for route in routes
        for dependant in _dependants(route.dependant)
        if any(sub.call is deps.get_services for sub in dependant.dependencies)
        and getattr(dependant.call, "__module__", None) != deps.__name__
    })
    assert not wrong, "takes the whole container (use a narrow dependency of api/deps.py)"
