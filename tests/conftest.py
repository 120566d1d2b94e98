"""Shared pytest fixtures."""
from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real sample data sets at ``../shared/data`` (relative to the repository root).

    When the folder is missing the test is skipped, except on CI (``CI=true``), where it fails loudly:
    CI must have the data.
    """
    if not SHARED_DATA.is_dir():
        msg = f"real sample data not found at {SHARED_DATA} (expected ../shared/data next to the repository)"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail("!!! CI=true but " + msg + " -- the data-backed tests cannot run !!!", pytrace=False)
        pytest.skip(msg)
    return SHARED_DATA


#: ``tfmec run`` flags that keep 2 of the synthetic data's 13 numeric and 6 of its 26 categorical
#: columns: an end-to-end run builds (and traces) a model of 8 fields instead of 39, which is what
#: dominates a small run's time; the behaviour under test does not depend on the field count.
FEW_SYNTHETIC_FIELDS = ["--drop", ",".join([f"I{i}" for i in range(3, 14)] + [f"C{i}" for i in range(7, 27)])]
