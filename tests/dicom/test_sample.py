"""Synthetic studies with planted PHI (mida.dicom.sample)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from mida.dicom import twid
from mida.dicom.sample import (
    MANIFEST_NAME,
    PHI_CATEGORIES,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    VENDOR_PRIVATE,
    SampleManifest,
    generate,
    render_text,
)


def small(out: Path, patients: int, seed: int = 0, **kwargs: Any) -> SampleManifest:
    """Generate with small images, so the suite stays fast."""
    return generate(
        out, patients, seed=seed, ct_slices=3, ct_size=64, mr_slices=2, mr_size=48, **kwargs
    )


SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}
# Attributes whose every value must be listed in the manifest (generic issuers are not).
IDENTIFYING = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "PatientComments", "AdditionalPatientHistory", "Occupation",
    "AccessionNumber", "StudyID", "RequestedProcedureID", "ScheduledProcedureStepID",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "ReasonForTheRequestedProcedure",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "StudyComments", "ImageComments", "LocalNamespaceEntityID",
    "PersonTelephoneNumbers", "CodeValue", "CodeMeaning",
}  # fmt: skip


def walk(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, DataElement]]:
    """Every element with its sequence depth (0 = top level)."""
    for elem in ds:
        yield depth, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, depth + 1)


def values(elem: DataElement) -> list[str]:
    if elem.VM == 0 or elem.value is None:
        return []
    multi = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in multi if str(v)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    out = tmp_path_factory.mktemp("sample") / "out"
    return out, small(out, patients=4, seed=3)


@pytest.fixture(scope="module")
def datasets(archive: tuple[Path, SampleManifest]) -> dict[str, Dataset]:
    root, manifest = archive
    return {rel: pydicom.dcmread(root / rel) for rel in manifest.files}


def test_layout_counts_and_manifest_file(archive: tuple[Path, SampleManifest]) -> None:
    root, manifest = archive
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm"))
    assert on_disk == manifest.files
    assert all(re.fullmatch(r"\d{3}/\d+/\d+/\d{4}\.dcm", rel) for rel in on_disk)
    # patients 0-3: CT x (1 + even), MR, CR, US for 0 and 3
    assert manifest.counts == {"CT": 6 * 3, "MR": 4 * 2, "CR": 4, "US": 2}
    assert SampleManifest.read(root / MANIFEST_NAME) == manifest
    assert set(manifest.phi) == set(PHI_CATEGORIES)
    assert all(manifest.phi[c] for c in PHI_CATEGORIES)


def test_no_phi_in_paths(archive: tuple[Path, SampleManifest]) -> None:
    _, manifest = archive
    strings = manifest.phi_strings()
    for rel in manifest.files:
        assert not [s for s in strings if s in rel]


def test_manifest_keeps_paths_under_files_keys(archive: tuple[Path, SampleManifest]) -> None:
    """Leak scans collect every JSON string but those under "files"; none may be a path."""

    def strings(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("files", "counts"):
                    yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    root, manifest = archive
    data = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    paths = {rel.rsplit("/", n)[0] for rel in manifest.files for n in range(4)}
    assert not [s for s in strings(data) if s in paths or s.endswith(".dcm")]


def test_every_file_decodes_with_the_right_class_shape_and_dtype(
    datasets: dict[str, Dataset],
) -> None:
    expected = {
        "CT": ((64, 64), np.int16, "MONOCHROME2"),
        "MR": ((48, 48), np.uint16, "MONOCHROME2"),
        "CR": ((512, 512), np.uint16, "MONOCHROME1"),
        "US": ((480, 640, 3), np.uint8, "RGB"),
    }
    for rel, ds in datasets.items():
        shape, dtype, photometric = expected[ds.Modality]
        assert ds.SOPClassUID == SOP_CLASS[ds.Modality], rel
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.PhotometricInterpretation == photometric
        pixels = ds.pixel_array
        assert pixels.shape == shape, rel
        assert pixels.dtype == dtype, rel
        assert pixels.std() > 0, rel


def test_default_sizes_and_speed(tmp_path: Path) -> None:
    start = time.perf_counter()
    manifest = generate(tmp_path / "out", patients=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"generating 2 patients took {elapsed:.1f} s"
    shapes = {}
    for rel in manifest.files:
        ds = pydicom.dcmread(tmp_path / "out" / rel)
        shapes[ds.Modality] = ds.pixel_array.shape
    assert shapes == {"CT": (512, 512), "MR": (256, 256), "CR": (512, 512), "US": (480, 640, 3)}
    assert manifest.counts == {"CT": 3 * 8, "MR": 2 * 4, "CR": 2, "US": 1}


def test_ct_is_hounsfield_with_a_liver(datasets: dict[str, Dataset]) -> None:
    ct = next(ds for ds in datasets.values() if ds.Modality == "CT" and ds.InstanceNumber == 2)
    assert (ct.RescaleIntercept, ct.RescaleSlope) == (-1024, 1)
    hu = ct.pixel_array.astype(float) * ct.RescaleSlope + ct.RescaleIntercept
    assert (hu < -900).any()  # air
    assert ((hu > 80) & (hu < 150)).mean() > 0.02  # enhancing liver
    assert (hu > 500).any()  # spine


def test_cross_section_geometry_is_consistent(datasets: dict[str, Dataset]) -> None:
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets.values():
        if ds.Modality in ("CT", "MR"):
            by_series[ds.SeriesInstanceUID].append(ds)
    assert len(by_series) == 6 + 4
    for series in by_series.values():
        series.sort(key=lambda d: d.InstanceNumber)
        sops = {d.SOPInstanceUID for d in series}
        assert len({d.FrameOfReferenceUID for d in series}) == 1
        for a, b in itertools.pairwise(series):
            assert [float(v) for v in a.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert a.ImagePositionPatient[:2] == b.ImagePositionPatient[:2]
            step = float(a.ImagePositionPatient[2]) - float(b.ImagePositionPatient[2])
            assert step == pytest.approx(float(a.SliceThickness))
        for d in series:
            assert float(d.SliceLocation) == pytest.approx(float(d.ImagePositionPatient[2]))
            assert len(d.PixelSpacing) == 2
            ref = d.ReferencedImageSequence[0]
            assert ref.ReferencedSOPClassUID == d.SOPClassUID
            assert ref.ReferencedSOPInstanceUID in sops - {d.SOPInstanceUID}


def test_charset_and_ideographic_name_round_trip(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    for ds in datasets.values():
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        name = ds.PatientName
        assert re.fullmatch(r"[A-Za-z]+\^[A-Za-z]+-[A-Za-z]+", name.alphabetic)
        assert re.fullmatch(r"[\u4e00-\u9fff]\^[\u4e00-\u9fff]{2}", name.ideographic)
        assert str(name) in manifest.phi["names"]
        assert name.ideographic.replace("^", "") in manifest.phi["names"]


def test_patient_ids_are_valid_national_ids_of_the_right_sex(
    datasets: dict[str, Dataset],
) -> None:
    ids = set()
    for ds in datasets.values():
        assert twid.is_valid(ds.PatientID, allow_resident=False)
        assert twid.sex_of(ds.PatientID) == ds.PatientSex
        assert [item.PatientID for item in ds.OtherPatientIDsSequence]
        assert ds.IssuerOfPatientID
        ids.add(ds.PatientID)
    assert len(ids) == 4


def test_every_manifest_string_occurs_in_some_file(archive: tuple[Path, SampleManifest]) -> None:
    root, manifest = archive
    blobs = [(root / rel).read_bytes() for rel in manifest.files]
    missing = [s for s in manifest.phi_strings() if not any(s.encode() in b for b in blobs)]
    assert missing == []


def test_every_identifying_value_is_in_the_manifest(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    listed = set(manifest.phi_strings())
    unlisted: set[str] = set()
    for ds in datasets.values():
        for _, elem in walk(ds):
            private = (  # the planted block; VENDOR_PRIVATE holds no PHI
                elem.tag.is_private and not elem.tag.is_private_creator
                and elem.tag.group == PRIVATE_GROUP
            )  # fmt: skip
            if elem.VR == "SQ" or not (private or elem.keyword in IDENTIFYING):
                continue
            unlisted.update(v for v in values(elem) if v not in listed)
            if elem.VR == "PN":
                unlisted.update(str(v) for v in [elem.value] if str(v) not in listed)
    assert unlisted == set()


def test_every_generated_uid_is_listed(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    uids = set(manifest.phi["uids"])
    for ds in datasets.values():
        for _, elem in walk(ds):
            if elem.VR != "UI":
                continue
            for value in values(elem):
                if value.startswith("2.25."):
                    assert value in uids, elem.keyword
                    assert len(value) <= 64
                else:  # SOP classes and the like come from the standard
                    assert UID(value).name != value, elem.keyword


def test_phi_sits_three_sequences_deep(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    listed = set(manifest.phi_strings())
    for ds in datasets.values():
        deep_standard = [
            v
            for depth, e in walk(ds)
            if depth >= 3 and not e.tag.is_private
            for v in values(e)
            if v in listed
        ]
        deep_private = [
            v
            for depth, e in walk(ds)
            if depth >= 3 and e.tag.is_private and not e.tag.is_private_creator
            for v in values(e)
        ]
        assert ds.PatientID in deep_private
        assert deep_standard  # e.g. OtherPatientIDs > Qualifiers > AssigningFacility
        request = ds.RequestAttributesSequence[0]
        assert str(request.RequestingPhysician) in listed


def test_vendor_private_attributes(datasets: dict[str, Dataset]) -> None:
    seen = set()
    for ds in datasets.values():
        for creator, group, byte, vr, value in VENDOR_PRIVATE.get(ds.Modality, ()):
            elem = ds.private_block(group, creator)[byte]
            assert (elem.VR, str(elem.value)) == (vr, value)
            seen.add(ds.Modality)
    assert seen == {"CT", "MR"}


def test_private_block_and_private_sequence(datasets: dict[str, Dataset]) -> None:
    ds = next(iter(datasets.values()))
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert block[0x11].value == ds.PatientID
    assert block[0x12].value in ds.PatientTelephoneNumbers
    assert block[0x10].VR == "LO"
    assert block[0x13].VR == "LT"
    item = block[0x40].value[0]
    assert str(item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x20].value) == str(
        ds.PatientName
    )


def test_patients_have_studies_on_different_dates(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    ct_dates: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for ds in datasets.values():
        if ds.Modality == "CT":
            ct_dates[ds.PatientID].add((ds.StudyInstanceUID, ds.StudyDate))
    two = [dates for dates in ct_dates.values() if len(dates) == 2]
    assert len(two) == 2  # patients 0 and 2
    for dates in two:
        assert len({date for _, date in dates}) == 2
    first = [s for s in manifest.studies if s.patient == 0]
    assert len({s.StudyDate for s in first}) >= 3
    # study folders are numbered in date order
    assert [s.StudyDate for s in first] == sorted(s.StudyDate for s in first)
    assert [s.files[0].split("/")[1] for s in first] == [str(i) for i in range(1, len(first) + 1)]
    for study in manifest.studies:
        assert {datasets[rel].StudyInstanceUID for rel in study.files} == {study.StudyInstanceUID}


def test_planted_free_text_and_minguo_dates(datasets: dict[str, Dataset]) -> None:
    ds = next(ds for ds in datasets.values() if ds.Modality == "MR")
    roc = int(ds.StudyDate[:4]) - 1911
    assert f"民國{roc}年" in ds.StudyComments
    assert f"{roc}/{ds.StudyDate[4:6]}/{ds.StudyDate[6:]}" in ds.ImageComments
    assert ds.PatientName.ideographic.replace("^", "") in ds.AdditionalPatientHistory
    assert re.fullmatch(r"09\d\d-\d{3}-\d{3}", ds.PatientTelephoneNumbers[0])


def test_ultrasound_burns_in_name_id_and_date(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    _, manifest = archive
    assert set(manifest.burned_in) == {rel for rel, ds in datasets.items() if ds.Modality == "US"}
    for rel, boxes in manifest.burned_in.items():
        ds = datasets[rel]
        assert ds.BurnedInAnnotation == "YES"
        for box in boxes:
            rows = slice(box.row, box.row + box.rows)
            region = ds.pixel_array[rows, box.column : box.column + box.columns]
            assert region.min() == 0 and region.max() == 255  # ink on background
            assert np.array_equal(region[..., 0] == 255, render_text(box.text, 2))
    rel = next(rel for rel in manifest.burned_in if rel.startswith("000/"))
    texts = " ".join(b.text for b in manifest.burned_in[rel])
    ds = datasets[rel]
    assert ds.PatientName.family_name.upper() in texts
    assert ds.PatientID in texts
    assert f"{ds.StudyDate[:4]}/{ds.StudyDate[4:6]}/{ds.StudyDate[6:]}" in texts


def test_render_text_draws_known_glyphs() -> None:
    one = render_text("1", scale=1)
    assert one.shape == (8, 6)
    assert one[:, 2].sum() == 7  # the stem of the 1
    assert not render_text(" ", scale=3).any()
    assert np.array_equal(render_text("a", 1), render_text("A", 1))
    assert np.array_equal(render_text("~", 1), render_text("?", 1))


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom's value validation warns; none allowed
        a = small(tmp_path / "a", patients=2, seed=11)
        b = small(tmp_path / "b", patients=2, seed=11)
    c = small(tmp_path / "c", patients=2, seed=12)
    assert a == b
    for rel in [*a.files, MANIFEST_NAME]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert not set(a.phi["uids"]) & set(c.phi["uids"])
    assert a.phi["ids"] != c.phi["ids"]


def test_progress_reports_every_file(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    manifest = small(tmp_path / "out", patients=1, progress=lambda d, t: seen.append((d, t)))
    n = len(manifest.files)
    assert seen == [(i, n) for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "kwargs",
    [{"patients": 0}, {"seed": -1}, {"ct_slices": 0}, {"mr_size": 8}],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path / "out", **kwargs)  # type: ignore[arg-type]


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        small(tmp_path, patients=1)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not on PATH")
def test_dciodvfy_finds_no_errors(
    archive: tuple[Path, SampleManifest], datasets: dict[str, Dataset]
) -> None:
    root, _ = archive
    one_per_modality = {ds.Modality: rel for rel, ds in sorted(datasets.items())}
    assert set(one_per_modality) == set(SOP_CLASS)
    for modality, rel in one_per_modality.items():
        result = subprocess.run(
            ["dciodvfy", str(root / rel)], capture_output=True, text=True, timeout=60
        )
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if re.search(r"\bError\b", line)]
        assert errors == [], f"{modality}: {errors}"
