"""Search a STAC API for items, with bounded retries on transient failures.

:func:`search_items` wraps pystac-client's item search. Connection errors, timeouts and HTTP 408, 429
and 5xx answers are retried ``retries`` times with exponential backoff (``backoff_s``, ``2 * backoff_s``,
``4 * backoff_s``...); after the last attempt :class:`CatalogUnavailableError` names the URL and what to
do. Any other 4xx answer means the request itself is wrong and raises :class:`CatalogRequestError`
at once. A retry repeats the whole search (landing page and every page), so the result is the same
as that of a search that never failed.

:func:`search_catalog_items` does the same and describes each item with
:func:`transforms.catalog.describe_item`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pystac

from transforms.catalog import CatalogItem, describe_item

__all__ = [
    "CatalogRequestError",
    "CatalogUnavailableError",
    "TRANSIENT_HTTP_STATUS",
    "search_catalog_items",
    "search_items",
]

log = logging.getLogger(__name__)

TRANSIENT_HTTP_STATUS: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers worth retrying: timeouts, rate limits and server-side failures."""


class CatalogUnavailableError(RuntimeError):
    """The STAC API could not be reached (or kept failing) after every retry.

    Attributes
    ----------
    url:
        The API root URL.
    attempts:
        How many times the search was tried.
    """

    def __init__(self, url: str, attempts: int, cause: BaseException) -> None:
        self.url = url
        self.attempts = attempts
        super().__init__(
            f"STAC API {url} is unavailable: {attempts} attempt(s) failed, the last with: "
            f"{_short(cause)}. Check that the API is running and the URL is right (a local one starts "
            "with 'copgen stac serve --world DIR'), or raise retries/backoff_s for a flaky network."
        )


class CatalogRequestError(ValueError):
    """The STAC API rejected the search (HTTP 4xx other than 408/425/429): fix the request.

    Attributes
    ----------
    url:
        The API root URL.
    status_code:
        The HTTP status, or None when the URL is not a STAC API with item search.
    """

    def __init__(self, url: str, status_code: int | None, message: str) -> None:
        self.url = url
        self.status_code = status_code
        super().__init__(message)


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _search_once(api_url: str, params: Mapping[str, Any], timeout_s: float) -> list[pystac.Item]:
    from pystac_client import Client

    client = Client.open(api_url, timeout=timeout_s)
    return list(client.search(**params).items())


def search_items(
    api_url: str,
    *,
    collections: Sequence[str],
    bbox: Sequence[float] | None = None,
    intersects: Mapping[str, Any] | Any | None = None,
    datetime: str | None = None,
    query: Mapping[str, Any] | Sequence[str] | None = None,
    filter: Mapping[str, Any] | str | None = None,  # noqa: A002 - the STAC API parameter name
    filter_lang: str | None = None,
    sortby: str | Sequence[str] | None = None,
    max_items: int | None = None,
    limit: int = 100,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 30.0,
) -> list[pystac.Item]:
    """Items of ``collections`` matching every given criterion, following all result pages.

    Parameters
    ----------
    api_url:
        STAC API root, e.g. ``http://127.0.0.1:8081``.
    collections:
        Collection ids to search (at least one).
    bbox:
        (west, south, east, north) in degrees.
    intersects:
        GeoJSON geometry dict (or an object with ``__geo_interface__``).
    datetime:
        A date-time or an interval, ``"2024-04-01/2024-04-30"``; open ends as ``".."``.
    query:
        STAC query extension, e.g. ``{"eo:cloud_cover": {"lt": 20}}``.
    filter:
        CQL2 filter: a dict (cql2-json) or a string (cql2-text, e.g. ``"eo:cloud_cover < 20"``).
    filter_lang:
        ``"cql2-json"`` or ``"cql2-text"``; inferred from ``filter``'s type when None.
    sortby:
        Sort fields, e.g. ``"-properties.datetime"``.
    max_items:
        Stop after this many items (None: all).
    limit:
        Items per page requested from the server.
    retries:
        Extra attempts after a transient failure (0: try once).
    backoff_s:
        Sleep before the first retry, doubled before each further one.
    timeout_s:
        Per-request timeout in seconds.

    Returns
    -------
    list[pystac.Item]
        In the server's order.

    Raises
    ------
    CatalogUnavailableError
        After ``retries + 1`` attempts failed with connection errors, timeouts or HTTP 408/425/429/5xx.
    CatalogRequestError
        At once, when the server rejects the request (other 4xx) or ``api_url`` is no STAC item-search API.
    ValueError
        For arguments that cannot make a valid search (no collections, a bad bbox, negative retries).
    """
    from pystac_client.exceptions import APIError
    from pystac_client.warnings import DoesNotConformTo

    if isinstance(collections, str) or not collections:
        raise ValueError(f"collections must be a non-empty list of collection ids, got {collections!r}")
    if bbox is not None and len(bbox) != 4:
        raise ValueError(f"bbox must be (west, south, east, north), got {bbox!r}")
    if retries < 0 or backoff_s < 0 or limit < 1:
        raise ValueError(f"need retries >= 0, backoff_s >= 0 and limit >= 1; got {retries}, {backoff_s}, {limit}")
    params: dict[str, Any] = {"collections": list(collections), "limit": limit, "max_items": max_items}
    optional = {"bbox": None if bbox is None else [float(v) for v in bbox], "intersects": intersects,
                "datetime": datetime, "query": query, "filter": filter, "filter_lang": filter_lang,
                "sortby": sortby}
    params.update({k: v for k, v in optional.items() if v is not None})

    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _search_once(api_url, params, timeout_s)
        except APIError as err:
            status = getattr(err, "status_code", None)
            if status is not None and status not in TRANSIENT_HTTP_STATUS:
                raise CatalogRequestError(
                    api_url, status,
                    f"STAC API {api_url} rejected the search with HTTP {status}: {_short(err)}. "
                    "Fix the search parameters (collections, bbox, datetime, query, filter).",
                ) from err
            if attempt == attempts:
                raise CatalogUnavailableError(api_url, attempts, err) from err
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("STAC search on %s failed (attempt %d of %d: %s); retrying in %.2f s",
                        api_url, attempt, attempts, _short(err, 120), delay)
            time.sleep(delay)
        except DoesNotConformTo as err:  # raised (not warned) when the root does not offer item search
            raise CatalogRequestError(
                api_url, None,
                f"{api_url} is not a STAC API with item search ({_short(err)}). "
                "Give the root URL of a STAC API (its landing page must conform to item-search).",
            ) from err
    raise AssertionError("unreachable")  # the loop returns or raises


def search_catalog_items(api_url: str, **search: Any) -> list[CatalogItem]:
    """:func:`search_items`, each item described by :func:`transforms.catalog.describe_item`.

    Takes the same keyword arguments as :func:`search_items`.

    Raises
    ------
    CatalogUnavailableError, CatalogRequestError
        As :func:`search_items`.
    ValueError
        If an item follows conventions :func:`~transforms.catalog.describe_item` cannot resolve.
    """
    return [describe_item(item) for item in search_items(api_url, **search)]
