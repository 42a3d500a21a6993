"""Where the peer reference data lives (`../shared` next to the repository by default).

`AVIS_SHARED_DIR` overrides the location. Tests that need the data skip when it is absent,
except under CI (`CI=true`), where a missing reference folder is an error: CI must not pass by
skipping the parity and metric checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("AVIS_SHARED_DIR", _REPO.parent / "shared"))
if not SHARED_DIR.is_dir() and Path("/work/shared").is_dir():
    SHARED_DIR = Path("/work/shared")

AVISM_REFERENCE = SHARED_DIR / "avism_reference"
GOLDEN_S1 = AVISM_REFERENCE / "golden_S1"
METRIC_CASES = SHARED_DIR / "metric_cases"
AUDIO_REFERENCE = SHARED_DIR / "audio_reference"
MEDIA = SHARED_DIR / "media"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def check_reference_data() -> None:
    """Under CI, stop the session if any reference folder is missing (instead of skipping)."""
    if not IN_CI:
        return
    missing = [p for p in (GOLDEN_S1, METRIC_CASES, AUDIO_REFERENCE, MEDIA) if not p.is_dir()]
    if missing:
        pytest.exit(
            f"CI: reference data missing: {', '.join(map(str, missing))} (set AVIS_SHARED_DIR)",
            returncode=3,
        )
