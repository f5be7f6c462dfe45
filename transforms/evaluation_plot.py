"""The "uncertainty narrows with information" summary and plot (COP-GEN paper, Figure 4).

For the S2 L2A experiments given more and more information ({DEM, LULC, location, date}, + S1,
+ S2 L1C) :func:`information_ladder` pools each experiment's ensemble spread and CRPS over the three
L2A groups (the mean of the groups' all-band values, reflectance units) and says whether both decrease
monotonically; :func:`ladder_svg` draws them as a two-line chart (plain SVG: no plotting dependency,
and it renders in any Markdown viewer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LADDER: tuple[tuple[str, str], ...] = (
    ("s2l2a_from_static", "DEM, LULC, lat/lon, date"),
    ("s2l2a_from_static_s1", "+ S1"),
    ("s2l2a_from_static_s1_l1c", "+ S2 L1C"),
)
"""The experiments of the ladder, least information first, with their axis labels."""


def information_ladder(experiments: Mapping[str, Any]) -> dict[str, Any] | None:
    """Spread and CRPS per ladder step, and whether each narrows monotonically.

    Parameters
    ----------
    experiments:
        The ``experiments`` section of a ``copgen evaluate`` report.

    Returns
    -------
    dict or None
        ``steps`` (per step: name, label, spread, crps, coverage_90), ``spread_narrows``,
        ``crps_narrows`` (strictly decreasing along the ladder); None if a ladder experiment was not
        run or was skipped.
    """
    steps: list[dict[str, Any]] = []
    for name, label in LADDER:
        entry = experiments.get(name) or {}
        scores = entry.get("scores")
        if not scores:
            return None
        ens = [s["all_bands"]["ensemble"] for s in scores.values() if "all_bands" in s]
        if not ens:
            return None
        mean = {k: sum(float(e[k]) for e in ens) / len(ens) for k in ("spread", "crps", "coverage_90")}
        steps.append({"name": name, "label": label, **mean})

    def narrows(key: str) -> bool:
        return all(float(b[key]) < float(a[key]) for a, b in zip(steps, steps[1:], strict=False))

    return {"steps": steps, "spread_narrows": narrows("spread"), "crps_narrows": narrows("crps")}


def ladder_svg(ladder: Mapping[str, Any], *, title: str = "S2 L2A uncertainty vs information",
               width: int = 560, height: int = 320) -> str:
    """An SVG line chart of the ladder's spread and CRPS (reflectance) per step.

    Raises
    ------
    ValueError
        If the ladder has no steps.
    """
    steps: Sequence[Mapping[str, Any]] = ladder["steps"]
    if not steps:
        raise ValueError("the ladder has no steps")
    left, right, top, bottom = 70, 20, 40, 60
    top_value = max(max(s["spread"], s["crps"]) for s in steps) * 1.15 or 1.0

    def x(i: int) -> float:
        return left + (width - left - right) * (i + 0.5) / len(steps)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1.0 - v / top_value)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>']
    for k in range(5):
        v = top_value * k / 4
        parts.append(f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    parts.append(f'<text x="16" y="{(top + height - bottom) / 2}" transform="rotate(-90 16 '
                 f'{(top + height - bottom) / 2})" text-anchor="middle">reflectance</text>')
    for i, s in enumerate(steps):
        parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 20}" text-anchor="middle">{s["label"]}</text>')
    for key, colour in (("spread", "#1f77b4"), ("crps", "#d62728")):
        pts = " ".join(f"{x(i):.1f},{y(s[key]):.1f}" for i, s in enumerate(steps))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, s in enumerate(steps):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(s[key]):.1f}" r="4" fill="{colour}"/>')
            parts.append(f'<text x="{x(i) + 7:.1f}" y="{y(s[key]) - 7:.1f}" fill="{colour}">{s[key]:.4f}</text>')
    lx = width - right - 150
    for j, (colour, name) in enumerate((("#1f77b4", "ensemble spread"), ("#d62728", "CRPS"))):
        ly = top + 8 + 16 * j
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 26}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
