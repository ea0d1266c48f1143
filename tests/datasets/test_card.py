"""Dataset cards: every figure from the manifest, Croissant that mlcroissant accepts and
loads, a DCAT record that parses as JSON-LD, escaped HTML, no PHI."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pydicom
import pytest
from sqlalchemy import select

from mida.catalog.models import Collection
from mida.config import Settings
from mida.datasets import card, card_data, card_rai, release
from mida.node import Node, init_node
from mida.sharing import restrictions
from tests.datasets.conftest import Cohort, build_cohort
from tests.factories import PHI

PLANTED = "<script>alert('card')</script>"
MLCROISSANT = Path(sys.executable).parent / "mlcroissant"


@dataclass
class Released:
    """A node with the eight-patient cohort released as liver@1.0.0 (patient P7 withdrawn)."""

    cohort: Cohort
    node: Node
    manifest: dict[str, Any]
    manifest_sha256: str
    originals: set[str]  # identifiers as the hospital wrote them: none may reach a card

    def card(self, **kw: Any) -> card.Card:
        with self.node.catalog().session() as s:
            return card.build_card(s, self.node.store(), release.get(s, "liver@1.0.0"),
                                   home=self.node.settings.home, **kw)


def build_release(tmp: Path) -> Released:
    """The cohort of tests/datasets/conftest.py, a restriction, a planted script, a release."""
    with pytest.MonkeyPatch.context() as mp:  # no developer MIDA_* setting leaks in
        for k in list(os.environ):
            if k.startswith("MIDA_") and not k.startswith("MIDA_TEST_"):
                mp.delenv(k)
        node = init_node(Settings(home=tmp / "node", workers=1), "TEST", "Test Hospital",
                         key=b"k" * 32)
        c = build_cohort(node, tmp)
        with node.catalog().session() as s:
            restrictions.add(s, "patient", c.patient["P7"], "consent_withdrawn")
            for col in s.scalars(select(Collection)):
                col.description = f"Liver CT {PLANTED}"
            s.commit()
            row = release.create(s, node.store(), "liver", "1.0.0",
                                 expression="modality = 'CT' or modality = 'MR'",
                                 description=f"Liver lesions {PLANTED}")
            s.commit()
            sha = row.manifest_sha256 or ""
            manifest = release.load_manifest(node.store(), row)
    originals = set(PHI.values())
    for f in (tmp / "in").rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        originals |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                      ds.FrameOfReferenceUID, ds.AccessionNumber}
    return Released(c, node, manifest, sha, originals)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    return build_release(tmp_path_factory.mktemp("card"))


@pytest.fixture(scope="module")
def written(released: Released, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[card.Card, Path]]:
    c = released.card()
    out = tmp_path_factory.mktemp("card-out")
    card.write_card(c, out)
    yield c, out


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_no_phi(folder: Path, originals: set[str]) -> None:
    """No original identifier in any file under ``folder`` (text or binary)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        for v in originals:
            assert v.encode() not in data, f"{v!r} found in {p.name}"


def test_programme_table_numbers_are_the_manifests(written: tuple[card.Card, Path],
                                                   released: Released) -> None:
    c, _ = written
    m, t = released.manifest, c.programme_table
    counts = m["counts"]
    assert (counts["patients"], counts["studies"], counts["series"]) == (7, 9, 9)  # P7 withdrawn
    for k in ("patients", "studies", "series", "instances", "bytes", "annotations"):
        assert t["volume"][k] == counts[k], k
    assert t["volume"]["records"] == "7 patients, 9 studies, 9 series, 36 instances"
    dates = sorted({x["StudyInstanceUID"]: x["StudyDate"] for x in m["series"]}.values())
    assert (t["time_range"]["start"], t["time_range"]["end"]) == (dates[0], dates[-1])
    assert "shifted" in t["time_range"]["note"]
    assert sum(t["frequency"]["studies_per_year"].values()) == counts["studies"]
    assert sum(t["frequency"]["studies_per_month"].values()) == counts["studies"]
    assert t["frequency"]["mean_studies_per_month"] == pytest.approx(
        counts["studies"] / t["frequency"]["months_spanned"], abs=1e-3)
    assert [(i["code"], i["name"], i["patients"], i["series"])
            for i in t["source"]["institutions"]] == [("TEST", "Test Hospital", 7, 9)]
    assert {x["name"]: x["series"] for x in t["source"]["collections"]} == dict(
        Counter(x["collection"] for x in m["series"]))
    items = {a["label"]: a for a in t["annotation_items"]}
    assert sum(a["annotations"] for a in items.values()) == counts["annotations"]
    assert items["lesion"]["kind"] == "mask" and items["lesion"]["readers"] == 2
    assert items["lesion"]["items_annotated"] == 4 and items["lesion"]["annotations"] == 8
    assert items["lirads"]["values"] == dict(Counter(
        a["data"]["value"] for a in m["annotations"] if a["label"] == "lirads"))
    assert items["lesion"]["concept"] == "Lesion (SCT 52988006)"
    variables = {v["name"]: v for v in t["main_variables"]}
    assert variables["Modality"]["completeness"] == 1 and variables["Modality"]["distinct"] == 2
    assert variables["BodyPartExamined"]["completeness"] == 0  # the factory writes none
    assert [x["name"] for x in t["format"]["sop_classes"]] == ["CT Image Storage",
                                                               "MR Image Storage"]
    assert sum(x["instances"] for x in t["format"]["sop_classes"]) == counts["instances"]
    assert t["excluded"]["by_reason"]["consent_withdrawn"]["series"] == 1
    # the tables carry the same numbers
    series_rows = _rows(c.series_csv)
    assert len(series_rows) == counts["series"]
    assert sum(int(r["instances"]) for r in series_rows) == counts["instances"]
    assert sum(int(r["bytes"]) for r in series_rows) == counts["bytes"]
    assert len(_rows(c.annotations_csv)) == counts["annotations"]


def test_composition_charts_for_every_dimension(written: tuple[card.Card, Path],
                                               released: Released) -> None:
    c, out = written
    m = released.manifest
    counts = m["counts"]
    total = {k: sum(n for _, n in ch.counts) for k, ch in c.charts.items()}
    assert total == {"modality": counts["series"], "sex": counts["patients"],
                     "age": counts["patients"], "labels": counts["annotations"],
                     "institution": counts["patients"], "collection": counts["series"],
                     "study_year": counts["studies"], "split": counts["patients"]}
    assert dict(c.charts["modality"].counts) == {"CT": 8, "MR": 1}
    assert dict(c.charts["sex"].counts) == {"M (male)": 3, "F (female)": 4}  # P7 (M) withdrawn
    # ages at the first study: 45, 62, 71, 33, 16, 58, 49 -> one band each but the 40s
    assert dict(c.charts["age"].counts) == {"10-19": 1, "30-39": 1, "40-49": 2, "50-59": 1,
                                            "60-69": 1, "70-79": 1}
    assert dict(c.charts["labels"].counts) == {"lesion": 8, "lirads": 6}
    assert dict(c.charts["split"].counts) == {k: v["patients"]
                                              for k, v in counts["splits"].items()}
    page = (out / "card.html").read_text()
    md = (out / "card.md").read_text()
    for key, ch in c.charts.items():
        assert page.count(f'id="chart-{key}"') == 1, key
        assert f"### {card_render_title(ch.title)}" in md
    assert page.count("<svg") == len(c.charts) == 8
    # each chart is well-formed SVG with one bar per group, the longest for the largest count
    for key, ch in c.charts.items():
        start = page.rindex("<svg", 0, page.index(f'id="chart-{key}"'))
        svg = ElementTree.fromstring(page[start:page.index("</svg>", start) + 6])
        bars = svg.findall("{http://www.w3.org/2000/svg}rect")
        assert len(bars) == len(ch.counts), key
        widths = [float(b.get("width", "0")) for b in bars]
        assert widths.index(max(widths)) == [n for _, n in ch.counts].index(
            max(n for _, n in ch.counts)), key


def card_render_title(title: str) -> str:
    from mida.datasets.card_render import md_escape

    return md_escape(title)


def test_croissant_validates_and_mlcroissant_loads_the_records(
        written: tuple[card.Card, Path], released: Released) -> None:
    c, out = written
    path = out / "croissant.json"
    res = subprocess.run([str(MLCROISSANT), "validate", "--jsonld", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "WARNING" not in res.stderr, res.stderr[-3000:]
    import mlcroissant as mlc

    ds = mlc.Dataset(jsonld=str(path))
    assert ds.metadata.conforms_to[:2] == ["http://mlcommons.org/croissant/1.1",
                                           "http://mlcommons.org/croissant/RAI/1.0"]
    rows = list(ds.records("series"))
    assert sorted(r["series/SeriesInstanceUID"].decode() for r in rows) == sorted(
        x["SeriesInstanceUID"] for x in released.manifest["series"])
    assert sum(r["series/instances"] for r in rows) == released.manifest["counts"]["instances"]
    anns = list(ds.records("annotations"))
    assert Counter(r["annotations/label"].decode() for r in anns) == {"lesion": 8, "lirads": 6}
    md = ds.metadata
    assert md.data_collection_timeframe is not None
    assert [d.date().isoformat() for d in md.data_collection_timeframe] == [
        c.programme_table["time_range"]["start"], c.programme_table["time_range"]["end"]]
    assert md.annotator_demographics and md.annotator_demographics[0].startswith("unknown")
    assert any(b.startswith("single site") for b in md.data_biases or [])
    assert md.data_preprocessing_protocol and "profile default" in md.data_preprocessing_protocol[0]
    for key in ("dataCollection", "dataCollectionTimeframe", "dataPreprocessingProtocol",
                "dataAnnotationProtocol", "annotationsPerItem", "annotatorDemographics",
                "personalSensitiveInformation", "dataUseCases", "dataLimitations", "dataBiases",
                "dataReleaseMaintenancePlan"):
        assert c.croissant[f"rai:{key}"], key
    # the distribution's checksums are the files' own; manifest.json is the release's blob
    dist = {d["@id"]: d for d in c.croissant["distribution"]}
    for name in ("manifest.json", "series.csv", "annotations.csv"):
        data = (out / name).read_bytes()
        assert dist[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
    assert dist["manifest.json"]["sha256"] == released.manifest_sha256 == c.manifest_sha256


def test_dcat_record_is_json_ld_with_the_required_fields(written: tuple[card.Card, Path],
                                                          released: Released) -> None:
    import rdflib
    from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS

    c, out = written
    g = rdflib.Graph().parse(data=(out / "dcat.json").read_text(), format="json-ld",
                             publicID="file:///bag/data/")
    ds = g.value(predicate=RDF.type, object=DCAT.Dataset, any=False)
    assert ds is not None
    assert str(g.value(ds, DCTERMS.identifier)) == "liver@1.0.0"
    assert str(g.value(ds, DCTERMS.title)) == "liver"
    assert PLANTED in str(g.value(ds, DCTERMS.description))  # data, not markup, in JSON-LD
    assert g.value(ds, DCTERMS.issued).toPython().isoformat() == released.manifest["created"][:10]
    period = g.value(ds, DCTERMS.temporal)
    assert str(g.value(period, DCAT.startDate)) == c.programme_table["time_range"]["start"]
    assert str(g.value(period, DCAT.endDate)) == c.programme_table["time_range"]["end"]
    publisher = g.value(ds, DCTERMS.publisher)
    assert str(g.value(publisher, FOAF.name)) == "Test Hospital"
    assert {str(k) for k in g.objects(ds, DCAT.keyword)} == {"CT", "MR", "lesion", "lirads"}
    assert len(list(g.objects(ds, DCAT.distribution))) == 3
    lic = g.value(ds, DCTERMS.license)
    assert str(g.value(lic, RDFS.label)).startswith("not set")
    assert c.croissant["license"] == [card_data.LICENSE_NOT_SET]
    spdx = rdflib.Namespace("http://spdx.org/rdf/terms#")
    sums = {str(g.value(d, DCTERMS.title)): str(g.value(g.value(d, spdx.checksum),
                                                        spdx.checksumValue))
            for d in g.objects(ds, DCAT.distribution)}
    assert sums["manifest.json"] == released.manifest_sha256


def test_a_given_licence_replaces_the_not_set_flag(released: Released) -> None:
    c = released.card(license="https://creativecommons.org/licenses/by-nc/4.0/")
    assert c.croissant["license"] == ["https://creativecommons.org/licenses/by-nc/4.0/"]
    assert c.dcat["dct:license"] == [{"@id": "https://creativecommons.org/licenses/by-nc/4.0/"}]
    assert "not set" not in c.markdown


def test_user_text_is_escaped_in_html_and_markdown(written: tuple[card.Card, Path]) -> None:
    _, out = written
    page = (out / "card.html").read_text()
    md = (out / "card.md").read_text()
    assert "<script" not in page.lower() and "<script" not in md.lower()
    assert "&lt;script&gt;alert(&#x27;card&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;" in md
    # self-contained: no external resource, no script, a policy that forbids them
    for needle in ("src=", "href=", "<link", "<img", "@import", "url(", "javascript:"):
        assert needle not in page, needle
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_no_phi_and_no_key_in_any_card_file(written: tuple[card.Card, Path],
                                            released: Released) -> None:
    c, out = written
    key_hex = (b"k" * 32).hex()
    assert_no_phi(out, released.originals | {"k" * 32, key_hex})
    pids = {r["patient"].split("/")[1] for r in _rows(c.series_csv)}
    assert pids == {released.cohort.patient[p] for p in released.cohort.patient if p != "P7"}
    assert not pids & {f"P{i}" for i in range(1, 9)}


def test_deid_report_names_profiles_and_key_ids_and_counts_exclusions(
        written: tuple[card.Card, Path], released: Released) -> None:
    c, out = written
    r = json.loads((out / "deid-report.json").read_text())
    assert r == c.deid_report
    [p] = r["profiles"]
    assert (p["profile"], p["profile_version"], p["key_id"]) == (
        "default", "3", released.node.key_id)
    assert p["known"] and "rtnLongModifDatesOpt" in p["options"]
    assert p["method_codes"][0]["CodeValue"] == "113100"  # the Basic Profile first
    assert any("shifted" in e for e in p["effects"])
    assert {"tag": "(0010,2180)", "keyword": "Occupation", "action": "remove"} in p["overrides"]
    assert r["collections"] == {"liver-a": "default", "liver-b": "default"}
    ex = r["restrictions"]["excluded"]
    assert ex["by_reason"]["consent_withdrawn"] == {"patients": 1, "studies": 1, "series": 1,
                                                    "instances": 4}
    assert r["restrictions"]["candidates"] == 10 and r["restrictions"]["released_series"] == 9


def test_the_card_is_deterministic_and_carries_the_manifest_byte_for_byte(
        written: tuple[card.Card, Path], released: Released, tmp_path: Path) -> None:
    c, out = written
    again = released.card()
    assert again.files() == c.files()
    card.write_card(again, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(card.CARD_FILES)
    for name in card.CARD_FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    raw = (out / "manifest.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == released.manifest_sha256
    assert json.loads(raw) == released.manifest


def test_biases_flag_a_sex_imbalance_and_an_empty_split(released: Released) -> None:
    m = copy.deepcopy(released.manifest)
    for x in m["series"]:
        x["PatientSex"] = "M" if x["patient"] != m["series"][0]["patient"] else "F"
    cs = card_data.charts(m)
    found = card_rai.biases(m, cs)
    assert any(b.startswith("sex imbalance: F 1 (14%), M 6 (86%)") for b in found), found
    balanced = card_rai.biases(released.manifest, card_data.charts(released.manifest))
    assert any(b.startswith("sex balanced") for b in balanced), balanced
    for x in m["series"]:
        x["split"] = "train"
    empty = card_rai.biases(m, card_data.charts(m))
    assert "split val has no patient (too few patients for the requested shares)" in empty


def test_a_release_without_annotations_has_a_card(released: Released) -> None:
    m = copy.deepcopy(released.manifest)
    m["annotations"], m["schemas"], m["counts"]["annotations"] = [], {}, 0
    raw = release.canonical_json(m)
    src = card_data.SourceInfo({"TEST": "Test Hospital"}, {})
    c = card.compose(raw, src)
    assert c.programme_table["annotation_items"] == []
    assert c.charts["labels"].counts == ()
    assert "no annotation" in c.rai["annotationsPerItem"]
    assert 'class="none"' in c.html


@pytest.mark.parametrize(("text", "years"), [("045Y", 45), ("011M", 0), ("003W", 0),
                                             ("120Y", 120), ("45", None), (None, None)])
def test_age_from_the_dicom_age_string(text: str | None, years: int | None) -> None:
    assert card_data.age_years(text) == years
    if years is not None:
        assert card_data.age_band(years) == ("90+" if years >= 90 else
                                             f"{years // 10 * 10}-{years // 10 * 10 + 9}")


def test_cards_read_the_catalog_on_both_backends(cohort_any: Cohort) -> None:
    n = cohort_any.node
    with n.catalog().session() as s:
        row = release.create(s, n.store(), "liver", "1.0.0", expression="modality = 'CT'")
        s.commit()
        c = card.build_card(s, n.store(), row)
    t = c.programme_table
    assert [(i["code"], i["name"]) for i in t["source"]["institutions"]] == [
        ("TEST", "Test Hospital")]
    assert [(x["name"], x["institution"], x["deid_profile"], x["series"])
            for x in t["source"]["collections"]] == [("liver-a", "TEST", "default", 6),
                                                     ("liver-b", "TEST", "default", 3)]
    assert c.deid_report["profiles"][0]["key_id"] == n.key_id


def test_a_collections_licence_reaches_the_card(released: Released) -> None:
    """A licence set on the collection (``mida collections terms --license``) is the card's."""
    from mida.sharing import governance

    lic = "https://creativecommons.org/licenses/by/4.0/"
    with released.node.catalog().session() as s:
        for name in {x["collection"] for x in released.manifest["series"]}:
            governance.set_terms(s, name, license=lic)
        s.commit()
    try:
        c = released.card()
        assert c.croissant["license"] == [lic]
        assert "not set" not in c.markdown
    finally:
        with released.node.catalog().session() as s:
            for name in {x["collection"] for x in released.manifest["series"]}:
                governance.set_terms(s, name, license="")
            s.commit()
    assert "not set" in released.card().markdown
