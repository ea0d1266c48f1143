"""pyradiomics features of every annotated region of a series (family ``radiomics``).

A region is the latest revision of a ``mask`` annotation on the series. Its
features are computed by pyradiomics (the maintained ``pyradiomics-bhklab``
fork, imported as ``radiomics``) on the series' stored pixels in modality
units (HU on CT), laid out as a SimpleITK image with the series' true voxel
spacing, origin and direction, so that shape features are in millimetres.

Settings (:data:`SETTINGS`), chosen to follow the Image Biomarker
Standardisation Initiative (IBSI) where pyradiomics allows:

* fixed bin width of 25 (modality units: 25 HU on CT) for the grey-level
  discretisation, as IBSI recommends for calibrated intensities;
* no resampling, no intensity normalisation, no re-segmentation range, no
  outlier removal: the image is used as stored, so values are reproducible
  from the archive alone;
* the original image only (no wavelet or LoG filters) and every feature
  class pyradiomics enables by default: ``shape`` (3D), ``firstorder``,
  ``glcm``, ``glrlm``, ``glszm``, ``gldm``, ``ngtdm``;
* the mask's voxels are label 1.

Names are pyradiomics' own (``original_firstorder_Mean``,
``original_shape_MeshVolume``); its ``diagnostics_*`` entries are not stored.
A non-finite value (a texture feature of a one-grey-level region) gives no
row. Each row's ``region`` is ``<label>:<annotation uid>@<revision>`` and its
``annotation_revision_id`` points at the exact revision the mask came from.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from mida.annotations import store as ann_store
from mida.annotations.geometry import SeriesGeometry
from mida.annotations.volume import load_volume
from mida.catalog.models import Annotation, AnnotationRevision, Series
from mida.errors import MidaError
from mida.features.models import FamilyResult, num
from mida.storage.blobstore import BlobStore

#: pyradiomics settings (see the module docstring for why each).
SETTINGS: dict[str, Any] = {
    "binWidth": 25,
    "resampledPixelSpacing": None,
    "normalize": False,
    "resegmentRange": None,
    "removeOutliers": None,
    "force2D": False,
    "label": 1,
}
#: Longest region string the catalog's ``Feature.region`` column holds.
REGION_MAX = 160


def pyradiomics_version() -> str:
    import radiomics

    return str(radiomics.__version__).lstrip("v")


def extractor_name() -> str:
    """What radiomics rows record as their ``extractor``, e.g. ``pyradiomics 3.1.4``."""
    return f"pyradiomics {pyradiomics_version()}"


def sitk_image(array: np.ndarray, geometry: SeriesGeometry) -> Any:
    """A SimpleITK image of a ``[slice, row, column]`` array on ``geometry``'s grid.

    SimpleITK indexes ``(x, y, z)`` = (column, row, slice) and its physical
    space is LPS, as DICOM's: spacing is (column, row, slice) spacing, the
    origin is the first slice's first pixel centre, and the direction matrix
    has the row cosines, column cosines and slice normal as its columns.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing((float(geometry.spacing[2]), float(geometry.spacing[1]),
                    float(geometry.spacing[0])))
    img.SetOrigin(tuple(float(x) for x in geometry.origin))
    img.SetDirection(tuple(float(x) for x in np.asarray(geometry.direction, dtype=float).T.ravel()))
    return img


def compute(image: Any, mask: Any, settings: dict[str, Any] | None = None) -> dict[str, float]:
    """pyradiomics' features of ``mask`` (label 1) on ``image`` (SimpleITK), finite only."""
    import radiomics
    from radiomics import featureextractor

    radiomics.logger.setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(**(settings or SETTINGS))
    out = {}
    for name, value in ex.execute(image, mask, label=int((settings or SETTINGS)["label"])).items():
        if name.startswith("diagnostics_"):
            continue
        f = float(np.asarray(value))
        if math.isfinite(f):
            out[name] = f
    return out


def mask_regions(s: Session, series: Series) -> list[tuple[Annotation, AnnotationRevision]]:
    """Every mask annotation of the series with its latest revision, oldest first."""
    q = (ann_store.latest_revisions()
         .where(Annotation.series_id == series.id, Annotation.kind == "mask")
         .order_by(Annotation.id))
    return [(a, r) for a, r in s.execute(q).all() if r.mask_sha256 is not None]


def region_name(ann: Annotation, rev: AnnotationRevision) -> str:
    return f"{ann.label}:{ann.uid}@{rev.revision}"


def radiomics_features(s: Session, store: BlobStore, series: Series) -> FamilyResult:
    """The ``radiomics`` family of one series: every mask region's features.

    A region that cannot be computed (an empty mask, a mask below pyradiomics'
    minimum of two dimensions) is left out and said in the notes; the series
    is skipped when it has no mask annotation at all.
    """
    import SimpleITK as sitk

    regions = mask_regions(s, series)
    if not regions:
        return FamilyResult(skipped="no mask annotation on this series")
    res = FamilyResult()
    volumes: dict[str, tuple[Any, SeriesGeometry]] = {}
    for ann, rev in regions:
        region = region_name(ann, rev)
        if len(region) > REGION_MAX:
            res.notes.append(f"region {region[:40]}...: the name is longer than {REGION_MAX}")
            continue
        assert rev.geometry is not None
        geometry = SeriesGeometry.from_json(rev.geometry)
        key = repr(sorted(rev.geometry.items()))
        try:
            if key not in volumes:
                volumes[key] = (sitk_image(load_volume(s, store, geometry), geometry), geometry)
            image, _ = volumes[key]
            mask = ann_store.load_mask(store, rev)
        except MidaError as exc:
            res.notes.append(f"region {region}: {exc}")
            continue
        if not mask.any():
            res.notes.append(f"region {region}: the mask is empty")
            continue
        mask_img = sitk.GetImageFromArray(mask.astype(np.uint8))
        mask_img.CopyInformation(image)
        try:
            values = compute(image, mask_img)
        except (ValueError, RuntimeError) as exc:  # pyradiomics' checks of the ROI
            res.notes.append(f"region {region}: pyradiomics refused it ({exc})")
            continue
        res.values += [num(name, v, region=region, annotation_revision_id=rev.id)
                       for name, v in sorted(values.items())]
    if not res.values and res.notes:
        res.skipped = "; ".join(res.notes)
        res.notes = []
    return res


__all__ = ["SETTINGS", "compute", "extractor_name", "mask_regions", "radiomics_features",
           "region_name", "sitk_image"]

