"""Linked-data records of a dataset card: Croissant 1.1 (+ RAI) and DCAT-AP.

Both are JSON-LD built from the programme table and the RAI fields of
:mod:`mida.datasets.card`; neither holds a number of its own.

* **Croissant** (`spec <https://docs.mlcommons.org/croissant/docs/croissant-spec-1.1.html>`_):
  a ``sc:Dataset`` whose ``distribution`` lists ``manifest.json``,
  ``series.csv`` and ``annotations.csv`` (``cr:FileObject`` with sha256 and
  size) and whose ``recordSet`` ``series`` and ``annotations`` describe the
  CSV columns with their data types, so ``mlcroissant`` can load the records.
  File URLs are relative to ``croissant.json``, which sits next to them.
* **DCAT-AP** (`DCAT-AP 3 <https://semiceu.github.io/DCAT-AP/releases/3.0.0/>`_):
  a ``dcat:Dataset`` with title, description, identifier (``name@version``),
  issue date, temporal coverage, publishers (the institutions), keywords,
  licence and one ``dcat:Distribution`` per file with its checksum.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mida.datasets.card_data import ANNOTATION_COLUMNS, LICENSE_NOT_SET, SERIES_COLUMNS

CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
RAI_VERSION = "http://mlcommons.org/croissant/RAI/1.0"

# The Croissant 1.1 @context as mlcroissant writes it.
CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

DCAT_CONTEXT: dict[str, Any] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "spdx": "http://spdx.org/rdf/terms#",
    "adms": "http://www.w3.org/ns/adms#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
}

_FILES = (
    ("manifest.json", "application/json",
     "The release manifest: every DICOM file with its sha256, the pinned annotation "
     "revisions, the label schemas, the de-identification profiles and key ids"),
    ("series.csv", "text/csv", "One row per series (columns: see the series record set)"),
    ("annotations.csv", "text/csv",
     "One row per pinned annotation revision (columns: see the annotations record set)"),
)


def _record_set(rs: str, file: str, columns: tuple[tuple[str, str, str], ...],
                description: str, key: str) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet", "@id": rs, "name": rs, "description": description,
        "key": {"@id": f"{rs}/{key}"},
        "field": [{"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name,
                   "description": desc, "dataType": dtype,
                   "source": {"fileObject": {"@id": file}, "extract": {"column": name}}}
                  for name, dtype, desc in columns],
    }


def _licenses(licenses: tuple[str, ...]) -> list[str]:
    return list(licenses) if licenses else [LICENSE_NOT_SET]


def croissant(manifest: dict[str, Any], table: dict[str, Any], rai: dict[str, Any],
              files: dict[str, bytes], licenses: tuple[str, ...]) -> dict[str, Any]:
    """The Croissant 1.1 JSON-LD of a release, with the RAI fields."""
    ref = table["name"]
    publishers = [{"@type": "sc:Organization", "name": i["name"]}
                  for i in table["source"]["institutions"]]
    year = table["created"][:4]
    cite = (f"@misc{{{ref.replace('@', '_').replace('.', '_').replace('-', '_')},\n"
            f"  title = {{{table['title']}}},\n  version = {{{table['version']}}},\n"
            f"  publisher = {{{', '.join(i['name'] for i in table['source']['institutions'])}}},\n"
            f"  year = {{{year}}},\n"
            f"  note = {{mida release {ref}, manifest sha256 "
            f"{hashlib.sha256(files['manifest.json']).hexdigest()}}}\n}}")
    doc: dict[str, Any] = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT_VERSION, RAI_VERSION],
        "name": table["title"],
        "alternateName": ref,
        "description": table["description"] or f"mida release {ref}",
        "version": table["version"],
        "datePublished": table["created"],
        "citeAs": cite,
        "license": _licenses(licenses),
        "creator": publishers,
        "publisher": publishers,
        "keywords": keywords(manifest),
        "isLiveDataset": False,
        "distribution": [
            {"@type": "cr:FileObject", "@id": name, "name": name, "description": desc,
             "contentUrl": name, "encodingFormat": fmt, "contentSize": f"{len(files[name])} B",
             "sha256": hashlib.sha256(files[name]).hexdigest()}
            for name, fmt, desc in _FILES],
        "recordSet": [
            _record_set("series", "series.csv", SERIES_COLUMNS,
                        "One record per DICOM series of the release", "SeriesInstanceUID"),
            _record_set("annotations", "annotations.csv", ANNOTATION_COLUMNS,
                        "One record per pinned annotation revision", "uid"),
        ],
    }
    for k, v in rai.items():
        doc[f"rai:{k}"] = v
    if "dataCollectionTimeframe" in rai:
        # The RAI 1.0 spec spells it "Timeframe"; mlcroissant (1.1.x) reads "TimeFrame".
        # Both are written so that either reader finds the time frame.
        doc["rai:dataCollectionTimeFrame"] = rai["dataCollectionTimeframe"]
    return doc


def keywords(manifest: dict[str, Any]) -> list[str]:
    """Modalities, body parts and labels of a release, sorted, without duplicates."""
    words = {x["Modality"] for x in manifest["series"] if x.get("Modality")}
    words |= {x["BodyPartExamined"] for x in manifest["series"] if x.get("BodyPartExamined")}
    words |= {a["label"] for a in manifest["annotations"]}
    return sorted(words, key=lambda w: (w.lower(), w))


def dcat(manifest: dict[str, Any], table: dict[str, Any], files: dict[str, bytes],
         licenses: tuple[str, ...]) -> dict[str, Any]:
    """The DCAT-AP JSON-LD record of a release."""
    ref = table["name"]
    tr = table["time_range"]
    base = f"urn:mida:release:{ref}"
    if licenses:
        lic: list[dict[str, Any]] = [
            {"@id": x} if ":" in x else {"@type": "dct:LicenseDocument", "rdfs:label": x}
            for x in licenses]
    else:
        lic = [{"@type": "dct:LicenseDocument", "rdfs:label": LICENSE_NOT_SET}]
    doc: dict[str, Any] = {
        "@context": DCAT_CONTEXT,
        "@id": base,
        "@type": "dcat:Dataset",
        "dct:title": table["title"],
        "dct:description": table["description"] or f"mida release {ref}",
        "dct:identifier": ref,
        "dcat:version": table["version"],
        "adms:versionNotes": "manifest sha256 "
                             + hashlib.sha256(files["manifest.json"]).hexdigest(),
        "dct:issued": {"@value": table["created"][:10], "@type": "xsd:date"},
        "dct:publisher": [
            {"@id": f"urn:mida:institution:{i['code']}", "@type": "foaf:Agent",
             "foaf:name": i["name"], "dct:identifier": i["code"]}
            for i in table["source"]["institutions"]],
        "dcat:keyword": keywords(manifest),
        "dct:license": lic,
        "dct:accessRights": "restricted: pseudonymised health data; access on approval",
        "dct:provenance": {"@type": "dct:ProvenanceStatement",
                           "rdfs:label": "; ".join(p for p in (
                               "de-identified at ingest (see deid-report.json)",
                               f"selected by {manifest.get('expression')!r}") if p)},
        "dcat:distribution": [
            {"@id": f"{base}/{name}", "@type": "dcat:Distribution", "dct:title": name,
             "dct:description": desc, "dcat:downloadURL": {"@id": name},
             "dcat:accessURL": {"@id": name}, "dcat:mediaType": fmt,
             "dcat:byteSize": {"@value": str(len(files[name])), "@type": "xsd:nonNegativeInteger"},
             "spdx:checksum": {"@type": "spdx:Checksum",
                               "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
                               "spdx:checksumValue": {
                                   "@value": hashlib.sha256(files[name]).hexdigest(),
                                   "@type": "xsd:hexBinary"}}}
            for name, fmt, desc in _FILES],
    }
    if tr["start"]:
        doc["dct:temporal"] = {"@type": "dct:PeriodOfTime",
                               "dcat:startDate": {"@value": tr["start"], "@type": "xsd:date"},
                               "dcat:endDate": {"@value": tr["end"], "@type": "xsd:date"},
                               "skos:note": tr["note"]}
    return doc


__all__ = ["CROISSANT_CONTEXT", "CROISSANT_VERSION", "DCAT_CONTEXT", "RAI_VERSION", "croissant",
           "dcat", "keywords"]
