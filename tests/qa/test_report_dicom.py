"""The report of a DICOM study with a clinical RTSTRUCT: CT found again from the batch inputs,
reference contours read from the RTSTRUCT (TG-263 names) and drawn, metrics from the manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from medseg.contour import ContourConfig, run_contour
from medseg.io import load_labels
from medseg.qa import StudySources, write_report
from medseg.qa.records import load_study_image, load_study_reference

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def contour_data():  # type: ignore[no-untyped-def]
    for p in (TESTS, TESTS / "contour"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import contour_data as cd

    return cd


def test_dicom_study_with_rtstruct(tmp_path: Path, contour_data) -> None:  # type: ignore[no-untyped-def]
    cd = contour_data
    tree = tmp_path / "pacs"
    cd.write_series(cd.openkbp_ct(cd.PATIENTS[0]), tree / "a", study_uid=generate_uid())
    cd.write_reference_rtstruct(tree / "a", cd.PATIENTS[0], tree / "a" / "RS_ref.dcm")
    config = ContourConfig.from_dict(
        {
            "inference": {"overlap": 0.25},
            "formats": ["nifti"],
            "cluster": {"workers": 1, "threads_per_worker": 2, "torch_threads": 2},
        }
    )
    out = tmp_path / "out"
    assert run_contour([tree], out, config).counts["done"] == 1
    write_report(out, inputs=[tree])
    data = json.loads((out / "report" / "review.json").read_text())
    (study,) = data["studies"]
    assert study["note"] == ""  # the CT was found and drawn
    assert set(study["metrics"]) == {
        "Brainstem", "SpinalCord", "LeftParotid", "RightParotid", "Esophagus", "Larynx",
        "Mandible",
    }  # fmt: skip
    assert study["metrics"]["Mandible"]["dice"] > 0.6
    # the reference read back by the report matches the clinical RTSTRUCT on the CT grid
    files = tuple(str(p) for p in sorted((tree / "a").iterdir()) if p.name != "RS_ref.dcm")
    src = StudySources("dicom", files, (str(tree / "a" / "RS_ref.dcm"),))
    ct = load_study_image(src)
    ref = load_study_reference(src, ct, ("Brainstem", "LeftParotid", "Mandible"))
    assert ref is not None and ref.volume.same_grid(ct)
    direct = load_labels(tree / "a" / "RS_ref.dcm", reference=ct)
    names = {n.lower().replace("_", ""): n for n in direct.label_map.names}
    key = next(v for k, v in names.items() if "mandible" in k)
    n_direct = int((direct.array == direct.label_map.id_of(key)).sum())
    assert int((ref.array == ref.label_map.id_of("Mandible")).sum()) == n_direct > 0
    assert (out / "report" / "img" / study["key"] / "LeftParotid.png").stat().st_size > 5000
