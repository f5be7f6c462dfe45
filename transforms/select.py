"""Which acquisitions feed a window: per collection, by date distance and cloud cover, with explicit rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from transforms.windows import Window


class ItemLike(Protocol):
    """What selection needs from a normalised catalog item."""

    @property
    def id(self) -> str: ...
    @property
    def collection(self) -> str: ...
    @property
    def datetime(self) -> datetime: ...
    @property
    def cloud_cover(self) -> float | None: ...
    @property
    def bbox(self) -> tuple[float, float, float, float]: ...


T = TypeVar("T", bound=ItemLike)


@dataclass(frozen=True)
class SelectionRule:
    """How to pick the acquisitions of one collection for a window and a target date.

    Attributes
    ----------
    collection:
        STAC collection id, e.g. ``"sentinel-2-l2a"``.
    max_days:
        Largest allowed distance between acquisition and target date, in days (ignored when ``static``).
    prefer:
        ``"nearest"`` sorts by date distance then cloud cover; ``"least_cloud"`` by cloud cover then distance.
    max_cloud:
        Drop items whose ``eo:cloud_cover`` (percent) exceeds this.
    static:
        Time-invariant products (DEM) or yearly ones (land cover): any date is acceptable; the item whose
        year is nearest the target wins.
    """

    collection: str
    max_days: float = 30.0
    prefer: Literal["nearest", "least_cloud"] = "nearest"
    max_cloud: float | None = None
    static: bool = False


def _intersects(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def select_items(window: Window, items: Sequence[T], target: datetime, rule: SelectionRule) -> list[T]:
    """Items of ``rule.collection`` that cover ``window``, best first.

    The read step mosaics them in this order (first valid pixel wins), so a partly covered or partly
    cloudy best item is completed by the next ones. Ties are broken by item id so the order is stable.

    Returns
    -------
    list
        Possibly empty: the caller decides whether a missing modality is an error or is generated.
    """
    wb = window.bounds_wgs84()
    tz = target.tzinfo
    chosen: list[tuple[tuple[float, float, str], T]] = []
    for item in items:
        if item.collection != rule.collection or not _intersects(item.bbox, wb):
            continue
        cloud = item.cloud_cover if item.cloud_cover is not None else 0.0
        if rule.max_cloud is not None and cloud > rule.max_cloud:
            continue
        when = item.datetime if item.datetime.tzinfo or tz is None else item.datetime.replace(tzinfo=tz)
        if rule.static:
            distance = abs(when.year - target.year) * 365.0
        else:
            distance = abs((when - target).total_seconds()) / 86400.0
            if distance > rule.max_days:
                continue
        sort_key = (distance, cloud, item.id) if rule.prefer == "nearest" else (cloud, distance, item.id)
        chosen.append((sort_key, item))
    chosen.sort(key=lambda kv: kv[0])
    return [item for _, item in chosen]
