"""Shared test set-up: a private calibration cache, so tests never touch the user's."""

from __future__ import annotations

import os
import tempfile

# Set before amorsize_flows is imported anywhere: the calibration cache is read lazily, but a
# test session must neither read nor write the developer's own cache.
os.environ.setdefault("AMORSIZE_CACHE_DIR", tempfile.mkdtemp(prefix="amorsize-test-cache-"))
