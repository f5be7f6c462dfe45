"""Golden-vector comparisons against a directory laid out like ``shared/reference/copgen/``.

Each submodule (``grid``, ``processing``, ``backbone``, ``vae``, ``sampler``) exposes
``run(ref_dir: Path) -> list[CheckResult]``; :func:`run_all` runs those whose folder exists.
A check compares one named output with the official vector and records the worst error against the
tolerance documented in the reference README.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

SECTIONS: tuple[str, ...] = ("grid", "processing", "backbone", "vae", "sampler")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one golden comparison.

    ``worst`` is the largest violation measure (absolute error, or count of mismatches for exact
    checks); ``tolerance`` is what was allowed; ``ok`` is the verdict.
    """

    section: str
    name: str
    worst: float
    tolerance: float
    ok: bool
    detail: str = ""

    def line(self) -> str:
        flag = "ok  " if self.ok else "FAIL"
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{flag} {self.section:<10} {self.name:<48} worst={self.worst:.3e} tol={self.tolerance:.1e}{extra}"


def run_all(ref_dir: Path, sections: tuple[str, ...] = SECTIONS) -> list[CheckResult]:
    """Run every available section under ``ref_dir``.

    Raises
    ------
    FileNotFoundError
        If ``ref_dir`` holds none of the known sections.
    """
    ref_dir = Path(ref_dir)
    present = [s for s in sections if (ref_dir / s).is_dir()]
    if not present:
        raise FileNotFoundError(
            f"{ref_dir} holds none of {list(sections)}; point check-reference at a directory laid out "
            "like shared/reference/copgen/"
        )
    results: list[CheckResult] = []
    for section in present:
        module = importlib.import_module(f"copgen_core.refcheck.{section}")
        results.extend(module.run(ref_dir))
    return results
