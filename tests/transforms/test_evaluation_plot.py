"""The uncertainty-vs-information ladder of ``copgen evaluate`` and its SVG chart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from transforms.evaluation_plot import LADDER, information_ladder, ladder_svg


def _experiments(spreads: list[float], crps: list[float]) -> dict[str, object]:
    out: dict[str, object] = {}
    for (name, _), s, c in zip(LADDER, spreads, crps, strict=True):
        groups = {g: {"all_bands": {"ensemble": {"spread": s * k, "crps": c * k, "coverage_90": 0.9}}}
                  for g, k in (("S2L2A_B02_B03_B04_B08", 1.0), ("S2L2A_B01_B09", 3.0))}
        out[name] = {"scores": groups}
    return out


def test_ladder_pools_groups_and_detects_monotonic_narrowing() -> None:
    ladder = information_ladder(_experiments([0.1, 0.08, 0.05], [0.2, 0.15, 0.16]))
    assert ladder is not None
    assert [round(s["spread"], 6) for s in ladder["steps"]] == [0.2, 0.16, 0.1]  # mean of x1 and x3
    assert ladder["spread_narrows"] is True and ladder["crps_narrows"] is False


def test_ladder_needs_every_step() -> None:
    experiments = _experiments([0.1, 0.08, 0.05], [0.2, 0.15, 0.1])
    experiments["s2l2a_from_static_s1"] = {"skipped": "the model does not cover S1"}
    assert information_ladder(experiments) is None


def test_svg_is_well_formed_with_a_point_per_step_and_metric() -> None:
    ladder = information_ladder(_experiments([0.1, 0.08, 0.05], [0.2, 0.15, 0.1]))
    assert ladder is not None
    root = ET.fromstring(ladder_svg(ladder))
    circles = [el for el in root.iter() if el.tag.endswith("circle")]
    assert len(circles) == 6
    texts = " ".join(el.text or "" for el in root.iter() if el.tag.endswith("text"))
    assert "+ S1" in texts and "+ S2 L1C" in texts and "0.1000" in texts
