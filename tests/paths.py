"""Where the tests find ``../shared`` (reference vectors and real data) beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COPGEN_SHARED", REPO.parent / "shared")).resolve()
REFERENCE = SHARED / "reference" / "copgen"
REAL = SHARED / "data" / "real"
