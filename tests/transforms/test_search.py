"""transforms.search against a real STAC API (pgstac + stac-fastapi) loaded with the small sample world.

Every expectation is computed in Python from the world's ndjson files, so a server (or a client) that
silently ignores a criterion fails the test. The retry behaviour is pinned with tiny real HTTP servers
that count the requests they get.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, shape

from transforms.catalog import ProductKind
from transforms.search import (
    CatalogRequestError,
    CatalogUnavailableError,
    search_catalog_items,
    search_items,
)

S2 = "sentinel-2-l2a"
S1 = "sentinel-1-rtc"


# ---------------------------------------------------------------- expectations from the world's files


@pytest.fixture(scope="module")
def world_items(small_world_dir: Path) -> list[dict[str, Any]]:
    items = []
    for path in sorted((small_world_dir / "stac" / "items").glob("*.ndjson")):
        items += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert items, f"the small world at {small_world_dir} has no items"
    return items


@pytest.fixture(scope="module")
def api_url(stac_api_world: Any) -> str:
    return stac_api_world.url


def _ids(items: list[Any]) -> list[str]:
    return sorted(i["id"] if isinstance(i, dict) else i.id for i in items)


def _in(items: list[dict[str, Any]], *collections: str) -> list[dict[str, Any]]:
    return [i for i in items if i["collection"] in collections]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _interval(item: dict[str, Any]) -> tuple[datetime, datetime]:
    p = item["properties"]
    start = _time(p.get("start_datetime") or p["datetime"])
    end = _time(p.get("end_datetime") or p["datetime"])
    return start, end


def _bbox2d(item: dict[str, Any]) -> tuple[float, float, float, float]:
    b = item["bbox"]
    return (b[0], b[1], b[3], b[4]) if len(b) == 6 else (b[0], b[1], b[2], b[3])


def _threshold(values: list[float], preferred: float) -> float:
    """``preferred`` if it splits ``values`` into two non-empty groups, else their median."""
    if any(v < preferred for v in values) and any(v >= preferred for v in values):
        return preferred
    return statistics.median(values)


# ---------------------------------------------------------------- searches against the world


def needs_world(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that uses the world API: one xdist worker runs them all, so the API starts once."""
    return pytest.mark.services(pytest.mark.xdist_group("stac-api-world")(test))


@needs_world
def test_collections_select_exactly_their_items(api_url: str, world_items: list[dict[str, Any]]) -> None:
    collections = sorted({i["collection"] for i in world_items})
    assert len(collections) >= 2
    for collection in collections:
        got = search_items(api_url, collections=[collection])
        assert _ids(got) == _ids(_in(world_items, collection))
    pair = collections[:2]
    assert _ids(search_items(api_url, collections=pair)) == _ids(_in(world_items, *pair))


@needs_world
def test_bbox_selects_items_whose_geometry_intersects_it(api_url: str, world_items: list[dict[str, Any]]) -> None:
    first = _in(world_items, S2)[0]
    w, s, e, n = _bbox2d(first)
    cx, cy, dx, dy = (w + e) / 2, (s + n) / 2, (e - w) / 8, (n - s) / 8
    query_box = (cx - dx, cy - dy, cx + dx, cy + dy)
    expected = [i for i in world_items if shape(i["geometry"]).intersects(box(*query_box))]
    got = search_items(api_url, collections=sorted({i["collection"] for i in world_items}), bbox=query_box)
    assert _ids(got) == _ids(expected)
    assert first["id"] in _ids(got)
    far_lon = cx - 180 if cx > 0 else cx + 180
    far_away = (far_lon - 0.01, -cy - 0.01, far_lon + 0.01, -cy + 0.01)
    assert not any(shape(i["geometry"]).intersects(box(*far_away)) for i in world_items)
    assert search_items(api_url, collections=[S2], bbox=far_away) == []


@needs_world
def test_intersects_selects_items_meeting_the_geometry(api_url: str, world_items: list[dict[str, Any]]) -> None:
    target = _in(world_items, S1)[-1] if _in(world_items, S1) else world_items[-1]
    c = shape(target["geometry"]).centroid
    triangle = {"type": "Polygon", "coordinates": [[[c.x - 0.01, c.y - 0.01], [c.x + 0.01, c.y - 0.01],
                                                     [c.x, c.y + 0.01], [c.x - 0.01, c.y - 0.01]]]}
    collections = sorted({i["collection"] for i in world_items})
    expected = [i for i in world_items if shape(i["geometry"]).intersects(shape(triangle))]
    got = search_items(api_url, collections=collections, intersects=triangle)
    assert _ids(got) == _ids(expected)
    assert target["id"] in _ids(got)


@needs_world
def test_datetime_range_selects_items_inside_it(api_url: str, world_items: list[dict[str, Any]]) -> None:
    sentinel = _in(world_items, S2, S1)
    times = sorted({_interval(i)[0] for i in sentinel})
    assert len(times) >= 3, "the small world should have at least three acquisition times"
    start, end = times[1], times[-2]
    expected = [i for i in sentinel if _interval(i)[0] <= end and _interval(i)[1] >= start]
    window = f"{start.isoformat().replace('+00:00', 'Z')}/{end.isoformat().replace('+00:00', 'Z')}"
    got = search_items(api_url, collections=[S2, S1], datetime=window)
    assert _ids(got) == _ids(expected)
    assert len(got) < len(sentinel)
    open_ended = search_items(api_url, collections=[S2, S1], datetime=f"{window.split('/')[0]}/..")
    assert _ids(open_ended) == _ids([i for i in sentinel if _interval(i)[1] >= start])


@pytest.fixture(scope="module")
def cloud_split(world_items: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    s2 = _in(world_items, S2)
    threshold = _threshold([i["properties"]["eo:cloud_cover"] for i in s2], 20.0)
    below = [i for i in s2 if i["properties"]["eo:cloud_cover"] < threshold]
    assert 0 < len(below) < len(s2)
    return threshold, below


@needs_world
def test_query_extension_filters_on_cloud_cover(api_url: str, cloud_split: tuple[float, list]) -> None:
    threshold, below = cloud_split
    got = search_items(api_url, collections=[S2], query={"eo:cloud_cover": {"lt": threshold}})
    assert _ids(got) == _ids(below)


@needs_world
def test_cql2_text_filter(api_url: str, cloud_split: tuple[float, list]) -> None:
    threshold, below = cloud_split
    got = search_items(api_url, collections=[S2], filter=f"eo:cloud_cover < {threshold}")
    assert _ids(got) == _ids(below)


@needs_world
def test_cql2_json_filter(api_url: str, cloud_split: tuple[float, list]) -> None:
    threshold, below = cloud_split
    cql = {"op": "<", "args": [{"property": "eo:cloud_cover"}, threshold]}
    got = search_items(api_url, collections=[S2], filter=cql, filter_lang="cql2-json")
    assert _ids(got) == _ids(below)


@needs_world
def test_filter_and_bbox_combine(api_url: str, world_items: list[dict[str, Any]], cloud_split: tuple) -> None:
    threshold, below = cloud_split
    w, s, e, n = _bbox2d(below[0])
    expected = [i for i in below if shape(i["geometry"]).intersects(box(w, s, e, n))]
    got = search_items(api_url, collections=[S2], bbox=(w, s, e, n), filter=f"eo:cloud_cover < {threshold}")
    assert _ids(got) == _ids(expected)


@needs_world
def test_paging_with_limit_2_returns_every_item_once(api_url: str, world_items: list[dict[str, Any]]) -> None:
    from pystac_client import Client

    collections = sorted({i["collection"] for i in world_items})
    assert len(world_items) > 4
    got = search_items(api_url, collections=collections, limit=2)
    assert len(got) == len(world_items)
    assert _ids(got) == _ids(world_items)
    pages = list(Client.open(api_url).search(collections=collections, limit=2).pages_as_dicts())
    assert all(len(p["features"]) <= 2 for p in pages)
    assert len(pages) >= math.ceil(len(world_items) / 2)


@needs_world
def test_max_items_stops_early(api_url: str, world_items: list[dict[str, Any]]) -> None:
    collections = sorted({i["collection"] for i in world_items})
    got = search_items(api_url, collections=collections, limit=2, max_items=3)
    assert len(got) == 3
    assert set(_ids(got)) <= set(_ids(world_items))


@needs_world
def test_results_normalise_through_catalog(api_url: str, world_items: list[dict[str, Any]]) -> None:
    kinds = {S2: ProductKind.S2_L2A, "sentinel-2-l1c": ProductKind.S2_L1C, S1: ProductKind.S1_RTC,
             "cop-dem-glo-30": ProductKind.DEM, "io-lulc-annual-v02": ProductKind.LULC}
    collections = sorted({i["collection"] for i in world_items})
    described = search_catalog_items(api_url, collections=collections)
    assert _ids(described) == _ids(world_items)
    by_id = {i["id"]: i for i in world_items}
    for item in described:
        assert item.kind is kinds[item.collection]
        assert item.bands, item.id
        assert all(b.href.startswith("file://") for b in item.bands)
        assert item.cloud_cover == by_id[item.id]["properties"].get("eo:cloud_cover")


@needs_world
def test_a_rejected_request_is_a_request_error(api_url: str) -> None:
    """A 4xx from the real server (here: an interval that ends before it starts) is not retried."""
    with pytest.raises(CatalogRequestError) as err:
        search_items(api_url, collections=[S2], datetime="2024-05-01/2024-04-01", retries=3, backoff_s=0.01)
    assert err.value.status_code == 400
    assert api_url in str(err.value)


# ---------------------------------------------------------------- retries, with counting HTTP servers


class _Counting:
    """A real HTTP server on 127.0.0.1 whose answers come from ``respond(n, method, path)``."""

    def __init__(self, respond: Callable[[int, str, str, str], tuple[int, dict[str, Any] | None]]) -> None:
        self.requests: list[tuple[str, str]] = []
        counting = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                counting.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = respond(len(counting.requests), self.command, self.path, counting.url)
                data = json.dumps(body or {"code": "error", "description": "test"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Counting:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _landing(url: str, conforms: list[str]) -> dict[str, Any]:
    return {
        "type": "Catalog", "id": "counting", "stac_version": "1.0.0", "description": "test API",
        "conformsTo": conforms,
        "links": [{"rel": "self", "href": url + "/"}, {"rel": "root", "href": url + "/"},
                  {"rel": "search", "href": url + "/search", "method": "POST", "type": "application/geo+json"}],
    }


ITEM_SEARCH = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port  # closed again: nothing listens there


def test_connection_refused_raises_unavailable_after_every_retry(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    with pytest.raises(CatalogUnavailableError) as err:
        search_items(url, collections=[S2], retries=2, backoff_s=0.01, timeout_s=5)
    assert err.value.attempts == 3
    assert err.value.url == url
    assert url in str(err.value) and "copgen stac serve" in str(err.value)


def test_server_errors_are_retried_then_reported() -> None:
    with _Counting(lambda n, method, path, url: (503, None)) as server:
        with pytest.raises(CatalogUnavailableError) as err:
            search_items(server.url, collections=[S2], retries=3, backoff_s=0.01)
    assert len(server.requests) == 4
    assert err.value.attempts == 4


def test_client_errors_are_not_retried() -> None:
    with _Counting(lambda n, method, path, url: (404, None)) as server:
        with pytest.raises(CatalogRequestError) as err:
            search_items(server.url, collections=[S2], retries=3, backoff_s=0.01)
    assert len(server.requests) == 1
    assert err.value.status_code == 404


def test_a_transient_failure_then_success_returns_the_items() -> None:
    feature = {"type": "Feature", "stac_version": "1.0.0", "id": "only-item", "bbox": [0, 0, 1, 1],
               "geometry": {"type": "Point", "coordinates": [0.5, 0.5]}, "collection": S2,
               "properties": {"datetime": "2024-04-01T00:00:00Z"}, "assets": {}, "links": []}

    def respond(n: int, method: str, path: str, url: str) -> tuple[int, dict[str, Any] | None]:
        if n <= 2:
            return 503, None
        if path.startswith("/search"):
            return 200, {"type": "FeatureCollection", "features": [feature], "links": []}
        return 200, _landing(url, ITEM_SEARCH)

    with _Counting(respond) as server:
        got = search_items(server.url, collections=[S2], retries=2, backoff_s=0.01)
    assert _ids(got) == ["only-item"]
    assert [r[1] for r in server.requests[:2]] == ["/", "/"]
    assert server.requests[-1][1].startswith("/search")


def test_a_url_without_item_search_is_a_request_error() -> None:
    with _Counting(lambda n, method, path, url: (200, _landing(url, ITEM_SEARCH[:1]))) as server:
        with pytest.raises(CatalogRequestError, match="not a STAC API with item search"):
            search_items(server.url, collections=[S2], retries=3, backoff_s=0.01)
    assert len(server.requests) == 1


@pytest.mark.parametrize("kwargs", [{"collections": []}, {"collections": "sentinel-2-l2a"},
                                    {"collections": [S2], "bbox": (0, 0, 1)}, {"collections": [S2], "retries": -1}])
def test_invalid_arguments_fail_before_any_request(kwargs: dict[str, Any], free_port: int) -> None:
    with pytest.raises(ValueError):
        search_items(f"http://127.0.0.1:{free_port}", **kwargs)
