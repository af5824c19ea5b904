"""Score a study's prediction against the reference contours that came with it.

When a study carries an RTSTRUCT (or DICOM-SEG) on the chosen CT, its structures are matched to
the model's labels by a name map (TG-263 names such as ``Parotid_L`` → ``LeftParotid``;
:data:`medseg.contour.config.TG263_NAME_MAP` plus the config's ``references.name_map``), and
Dice, HD95, ASSD and NSD per organ are computed with :func:`medseg.metrics.compute_metrics`.
Organs the reference does not contour are left out (partial contouring is common clinically).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medseg.contour.config import ReferenceConfig
from medseg.errors import MedsegError
from medseg.volume import LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["match_names", "normalise_name", "score_references"]

_METRICS = ("dice", "hd95", "assd", "nsd")


def normalise_name(name: str) -> str:
    """Case-, space-, ``_``- and ``-``-insensitive form of an organ name.

    Examples
    --------
    >>> normalise_name("Parotid_L"), normalise_name(" left-parotid ")
    ('parotidl', 'leftparotid')
    """
    return re.sub(r"[\s_\-]+", "", name).lower()


def match_names(
    reference_names: Sequence[str], model_labels: Sequence[str], name_map: Mapping[str, str]
) -> dict[str, str]:
    """Reference structure name → model label name, for the structures that match.

    A reference name matches when it equals a model label (normalised) or when the name map
    sends it (normalised) to one. The first reference structure wins per label.

    Examples
    --------
    >>> match_names(["Parotid_L", "PTV70", "BRAINSTEM", "Parotid_Lt"],
    ...             ["Brainstem", "LeftParotid"], {"Parotid_L": "LeftParotid"})
    {'Parotid_L': 'LeftParotid', 'BRAINSTEM': 'Brainstem'}
    """
    labels = {normalise_name(n): n for n in model_labels}
    mapped = {normalise_name(k): v for k, v in name_map.items()}
    out: dict[str, str] = {}
    taken: set[str] = set()
    for ref in reference_names:
        key = normalise_name(ref)
        target = labels.get(key) or labels.get(normalise_name(mapped.get(key, "")))
        if target and target not in taken:
            out[ref] = target
            taken.add(target)
    return out


def score_references(
    labels: LabelVolume,
    volume: Volume,
    reference_files: Sequence[str | os.PathLike[str]],
    config: ReferenceConfig,
    *,
    case: str = "case",
) -> dict[str, Any] | None:
    """Per-organ metrics of ``labels`` against the first usable reference file.

    Parameters
    ----------
    labels
        The prediction on ``volume``'s grid.
    volume
        The CT the reference contours are placed on.
    reference_files
        RTSTRUCT / SEG files referring to the CT's series.
    config
        Name map and NSD tolerance.
    case
        Name used in the metrics result (the study key).

    Returns
    -------
    dict or None
        ``{"reference": <modality>, "matched": {structure: label}, "organs": {label: {"dice",
        "hd95", "assd", "nsd"}}, "warnings": [...]}``; ``None`` when no file has a structure
        that matches a model label. A reference that cannot be read is reported in
        ``warnings`` of the next usable one (or returned alone with empty ``organs``).
    """
    if not config.enabled or not reference_files:
        return None
    from medseg.io.dicom_labels import load_dicom_masks
    from medseg.io.mask_folder import MaskSet
    from medseg.metrics import MetricsConfig, compute_metrics

    problems: list[str] = []
    for n, path in enumerate(reference_files):
        try:
            grid, structures, warnings = load_dicom_masks(path, reference=volume)
        except MedsegError as exc:
            problems.append(f"reference {n + 1} unusable: {exc}")
            continue
        names = [s.entry.name for s in structures if s.mask.any()]
        matched = match_names(names, labels.label_map.names, config.resolved_map())
        if not matched:
            problems.append(f"reference {n + 1}: no structure matches a model label")
            continue
        by_name = {s.entry.name: s.mask for s in structures}
        ref = MaskSet(grid, {label: by_name[r] for r, label in matched.items()})
        pred = MaskSet(volume, {label: labels.mask(label) for label in matched.values()})
        result = compute_metrics(
            pred, ref, config=MetricsConfig(tolerance_mm=config.tolerance_mm), case=case
        )
        organs = {
            name: {
                k: (None if r.values.get(k) is None else round(float(r.values[k] or 0.0), 4))
                for k in _METRICS
            }
            for name, r in result.labels.items()
        }
        return {
            "reference": "file " + str(n + 1),
            "matched": matched,
            "organs": organs,
            "warnings": [*problems, *warnings],
        }
    if problems:
        logger.info("%s: %s", case, "; ".join(problems))
        return {"reference": None, "matched": {}, "organs": {}, "warnings": problems}
    return None
