"""The shared data sets the tests read (``../shared/data`` beside the repository), and the marks
that skip a test, with the reason, on a machine that does not have them."""

from __future__ import annotations

import pytest

from models.data import DEFAULT_DATA_DIR

NYC = DEFAULT_DATA_DIR / "foursquare_nyc"

needs_nyc = pytest.mark.skipif(
    not NYC.is_dir(),
    reason=f"needs the shared Foursquare NYC data in {NYC} (../shared/data beside the repository); not on this machine",
)
BEAUTY = DEFAULT_DATA_DIR / "amazon_beauty"

needs_beauty = pytest.mark.skipif(
    not BEAUTY.is_dir(),
    reason=f"needs the shared Amazon Beauty data in {BEAUTY} (../shared/data beside the repository); not on this machine",
)
