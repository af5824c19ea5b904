"""The surfel normal table is DeepMind's ``surface_distance.lookup_tables``, entry for entry."""

from __future__ import annotations

import numpy as np
import pytest
from surface_distance import lookup_tables

from medseg.metrics import surfel_area_table
from medseg.metrics._surfel_table import SURFEL_NORMALS_EIGHTHS


def test_every_code_has_deepminds_normals_in_eighths() -> None:
    theirs = lookup_tables._NEIGHBOUR_CODE_TO_NORMALS
    assert len(SURFEL_NORMALS_EIGHTHS) == len(theirs) == 256
    for code, (ours, normals) in enumerate(zip(SURFEL_NORMALS_EIGHTHS, theirs, strict=True)):
        expected = np.asarray(normals, dtype=np.float64) * 8.0
        np.testing.assert_array_equal(np.asarray(ours, dtype=np.float64), expected, str(code))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.98, 0.98), (3.0, 0.7, 1.3)])
def test_areas_equal_deepminds_table(spacing: tuple[float, float, float]) -> None:
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(surfel_area_table(spacing), theirs, rtol=1e-14, atol=0)
    assert surfel_area_table(spacing)[0b00001111] == pytest.approx(spacing[1] * spacing[2])
