"""CSV labels: classification by SOP Instance UID (BreastMNIST-like), study labels, errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import generate_uid

from mida.annotations import store
from mida.annotations.formats import ImportOptions, import_path
from mida.annotations.schema import parse_schema
from mida.deid.pseudonyms import Pseudonymizer
from mida.errors import AnnotationError, SchemaError
from mida.ingest import ingest_paths
from mida.ingest.pipeline import Ingestor
from mida.node import Node
from tests.conftest import shared
from tests.factories import PHI, write

BREAST = {
    "name": "breast-us", "version": "1.0.0",
    "labels": [
        {"name": "diagnosis", "type": "classification", "level": "image",
         "values": ["malignant", "normal-or-benign"],
         "concept": {"CodeValue": "439401001", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Diagnosis"}},
        {"name": "birads", "type": "classification", "level": "study",
         "values": ["1", "2", "3", "4", "5"],
         "concept": {"CodeValue": "RID36042", "CodingSchemeDesignator": "RADLEX",
                     "CodeMeaning": "BI-RADS category"}},
        {"name": "size", "type": "measurement", "measure": "length",
         "concept": {"CodeValue": "410668003", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Length"}},
        {"name": "finding", "type": "text", "level": "study",
         "concept": {"CodeValue": "121071", "CodingSchemeDesignator": "DCM",
                     "CodeMeaning": "Finding"}},
        {"name": "lesion-box", "type": "bbox",
         "concept": {"CodeValue": "52988006", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Lesion"}},
    ],
}


@dataclass
class Images:
    node: Node
    studies: list[str]  # hospital UIDs, one image per study
    sops: list[str]

    def pseudo(self, uid: str) -> str:
        return Pseudonymizer(self.node.key()).uid(uid)


def _write_images(folder: Path, n: int, pixels: list[np.ndarray] | None = None,
                  **kw: object) -> tuple[list[str], list[str]]:
    studies, sops = [], []
    for i in range(n):
        study, sop = str(generate_uid()), str(generate_uid())
        over: dict[str, Any] = {"StudyInstanceUID": study, "SOPInstanceUID": sop,
                                   "Modality": "US", **kw}
        if pixels is not None:
            px = pixels[i]
            over.update(Rows=px.shape[0], Columns=px.shape[1], BitsAllocated=8, BitsStored=8,
                        HighBit=7, PixelRepresentation=0, RescaleIntercept=None,
                        RescaleSlope=None, PixelData=px.astype(np.uint8).tobytes())
        write(folder / f"{i:03d}.dcm", **over)
        studies.append(study)
        sops.append(sop)
    return studies, sops


@pytest.fixture
def images(node: Node, tmp_path: Path) -> Images:
    studies, sops = _write_images(tmp_path / "us", 4)
    assert ingest_paths(node, [tmp_path / "us"], "breast", workers=1).stored == 4
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(BREAST))
    return Images(node, studies, sops)


@pytest.fixture
def schema_only(node: Node) -> Node:
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(BREAST))
    return node


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip(), encoding="utf-8")
    return path


def _values(node: Node, label: str) -> dict[str, tuple[str, object, str]]:
    """Target UID (instance, else study) -> (level, data value or text, reader)."""
    with node.catalog().session() as s:
        out = {}
        for a, r in store.query(s, label=label):
            v = store.view(s, a, r)
            t = v["target"]
            uid = t["SOPInstanceUID"] or t["SeriesInstanceUID"] or t["StudyInstanceUID"]
            out[uid] = (t["level"], r.data.get("value", r.data.get("text")), a.reader)
        return out


def test_classification_by_sop_uid_and_study_label_by_study_uid(images: Images,
                                                                tmp_path: Path) -> None:
    st, sop = images.studies, images.sops
    path = _csv(tmp_path / "labels.csv", f"""
SOPInstanceUID,StudyInstanceUID,label,value,unit,text,reader
{sop[0]},,diagnosis,malignant,,,
{sop[1]},,diagnosis,normal-or-benign,,,
{sop[2]},,diagnosis,normal-or-benign,,,dr-chen
,{st[0]},birads,5,,,
,{st[1]},birads,2,,,
{sop[0]},,size,12.5,mm,,
,{st[0]},finding,,,Seen by Dr. {PHI['name']} on 2024-03-05: spiculated mass,
""")
    res = import_path(images.node, path, "csv", ImportOptions(schema="breast-us",
                                                             reader="mnist"))
    assert len(res.created) == 7 and res.schema == "breast-us@1.0.0"
    p = images.pseudo
    assert _values(images.node, "diagnosis") == {
        p(sop[0]): ("instance", "malignant", "mnist"),
        p(sop[1]): ("instance", "normal-or-benign", "mnist"),
        p(sop[2]): ("instance", "normal-or-benign", "dr-chen")}
    assert _values(images.node, "birads") == {p(st[0]): ("study", "5", "mnist"),
                                              p(st[1]): ("study", "2", "mnist")}
    assert _values(images.node, "size") == {p(sop[0]): ("instance", 12.5, "mnist")}
    (level, text, _), = _values(images.node, "finding").values()
    assert level == "study" and "spiculated mass" in str(text)
    assert not {"Lin", "Wen-Hsiung"} & set(str(text).split())
    assert "2024" not in str(text)  # the date before the colon is removed too
    with images.node.catalog().session() as s:
        provs = [r.provenance for _, r in store.query(s)]
    assert {pr["line"] for pr in provs} == set(range(2, 9))
    assert all(pr["format"] == "csv" and pr["file_sha256"] == res.file_sha256 for pr in provs)
    again = import_path(images.node, path, "csv", ImportOptions(schema="breast-us",
                                                               reader="mnist"))
    assert again.created == [] and "already imported" in again.skipped[0]


def test_study_label_on_image_rows_goes_to_the_study(images: Images, tmp_path: Path) -> None:
    st, sop = images.studies, images.sops
    # a per-image CSV repeating a per-study label; semicolons, BOM, odd header case
    path = tmp_path / "flat.csv"
    path.write_bytes(("\ufeffsopinstanceuid ; LABEL;Value\n"
                      f"{sop[0]};birads;4\n{sop[0]};birads;4\n{sop[3]};bi;3\n").encode())
    res = import_path(images.node, path, "csv", ImportOptions(
        schema="breast-us", label_map={"bi": "birads"}))
    assert len(res.created) == 2  # the repeated row is one annotation
    p = images.pseudo
    assert _values(images.node, "birads") == {p(st[0]): ("study", "4", "import"),
                                              p(st[3]): ("study", "3", "import")}
    clash = _csv(tmp_path / "clash.csv", f"""
SOPInstanceUID,label,value
{sop[1]},birads,1
{sop[1]},birads,3
""")
    with pytest.raises(AnnotationError, match=r"line 3: .*another value on line 2"):
        import_path(images.node, clash, "csv", ImportOptions(schema="breast-us", reader="x"))


def test_errors_name_line_and_column_and_store_nothing(images: Images, tmp_path: Path) -> None:
    sop = images.sops
    stranger = generate_uid()
    path = _csv(tmp_path / "bad.csv", f"""
SOPInstanceUID,AccessionNumber,label,value
{sop[0]},,diagnosis,{PHI['name']}
{stranger},,diagnosis,malignant
{sop[1]},,{PHI['pid']},malignant
{sop[2]},,size,twelve
{sop[3]},,lesion-box,1
,ACC20240305,birads,3
{sop[0]},,diagnosis,malignant
""")
    with pytest.raises(AnnotationError) as e:
        import_path(images.node, path, "csv", ImportOptions(schema="breast-us"))
    msg = str(e.value)
    assert "6 problem(s), nothing imported" in msg
    assert "line 2, column value: label 'diagnosis' takes one of malignant, normal-or-benign" \
        in msg
    assert f"line 3, column SOPInstanceUID: the referenced instance is not in the catalog " \
           f"(looked for it as given and as its pseudonym {images.pseudo(stranger)})" in msg
    assert "line 4, column label: not a label of breast-us@1.0.0" in msg
    assert "line 5, column value: label 'size' is a measurement" in msg
    assert "line 6, column label: 'lesion-box' is a bbox label" in msg
    assert "line 7, column AccessionNumber: no stored study has this accession number" in msg
    assert "line 8" not in msg
    for identifying in (PHI["name"], PHI["pid"], stranger, "ACC20240305"):
        assert identifying not in msg
    with images.node.catalog().session() as s:
        assert store.query(s) == []


@pytest.mark.parametrize(("header", "says"), [
    ("SOPInstanceUID,value", "no 'label' column"),
    ("PatientID,label,value", "names no target column"),
    ("SOPInstanceUID,label", "neither a 'value' nor a 'text'"),
    ("SOPInstanceUID,label,label,value", "columns repeat: label"),
])
def test_header_problems(schema_only: Node, tmp_path: Path, header: str, says: str) -> None:
    path = _csv(tmp_path / "h.csv", f"{header}\n1.2.3,birads,1\n")
    with pytest.raises(AnnotationError, match=says):
        import_path(schema_only, path, "csv", ImportOptions(schema="breast-us"))


def test_schema_is_required(schema_only: Node, tmp_path: Path) -> None:
    path = _csv(tmp_path / "x.csv", "SOPInstanceUID,label,value\n1.2.3,birads,1\n")
    with pytest.raises(SchemaError, match="--schema"):
        import_path(schema_only, path, "csv", ImportOptions())


def test_accession_matches_when_the_profile_keeps_it(node: Node, tmp_path: Path) -> None:
    """A node profile that keeps Accession Number lets a CSV name studies by accession."""
    profiles = node.settings.home / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "keep-accession.yaml").write_text(
        'name: keep-accession\nversion: "1"\ndescription: keeps accession numbers\n'
        "options: [rtnSafePrivOpt]\noverrides:\n  AccessionNumber: keep\n")
    studies, _ = _write_images(tmp_path / "a", 1, AccessionNumber="RIS0042")
    Ingestor(node, "acc", workers=1, profile="keep-accession").run([tmp_path / "a"])
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(BREAST))
    path = _csv(tmp_path / "acc.csv", "AccessionNumber,label,value\nRIS0042,birads,3\n")
    res = import_path(node, path, "csv", ImportOptions(schema="breast-us"))
    assert len(res.created) == 1
    p = Pseudonymizer(node.key())
    assert _values(node, "birads") == {p.uid(studies[0]): ("study", "3", "import")}


@pytest.mark.shared_data
def test_breastmnist_labels_by_sop_instance_uid(node: Node, tmp_path: Path) -> None:
    """Real BreastMNIST images and labels: 0 malignant, 1 normal or benign."""
    data = np.load(shared("labelled", "medmnist", "breastmnist.npz"))
    pixels, labels = data["test_images"][:8], data["test_labels"][:8, 0]
    assert set(labels.tolist()) == {0, 1}
    _, sops = _write_images(tmp_path / "mnist", len(pixels), list(pixels),
                                  PhotometricInterpretation="MONOCHROME2")
    assert ingest_paths(node, [tmp_path / "mnist"], "mnist", workers=1).stored == len(pixels)
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(BREAST))
    names = {0: "malignant", 1: "normal-or-benign"}
    rows = "".join(f"{u},diagnosis,{names[int(v)]}\n" for u, v in zip(sops, labels, strict=True))
    path = _csv(tmp_path / "breastmnist.csv", "SOPInstanceUID,label,value\n" + rows)
    res = import_path(node, path, "csv", ImportOptions(schema="breast-us", reader="medmnist"))
    assert len(res.created) == len(pixels)
    p = Pseudonymizer(node.key())
    got = _values(node, "diagnosis")
    assert got == {p.uid(u): ("instance", names[int(v)], "medmnist")
                   for u, v in zip(sops, labels, strict=True)}
