"""Hugging Face: an ``imagefolder`` tree (``hf``) or Parquet tables (``hf-parquet``).

Both hold one row per image: every frame of every series (each slice of a
CT or MR volume is one image), rendered to an 8-bit PNG as the COCO export
renders it. Columns:

``image``
    the PNG (imagefolder: the file ``file_name``; Parquet: a struct
    ``{bytes, path}``, which ``datasets`` reads as an ``Image`` feature).
``labels``
    the names of the labels present on the image, sorted: mask labels whose
    mask touches the slice, boxes and polygons drawn on the image, and the
    classification labels of its series or study.
one column per classification label of the release
    its value (the best annotation: adjudicated, reviewed, submitted; a person
    before a model; then by reader name), null when the image has none. A
    label whose name is taken by another column is prefixed ``label_``.
``split``, ``patient``, ``study``, ``series``, ``sop``, ``frame``
    the release's split and the (pseudonymous) DICOM identifiers.

Layouts::

    hf/<split>/metadata.jsonl                       one JSON object per image
    hf/<split>/<SeriesInstanceUID>/<SOPInstanceUID>_<frame>.png
    hf-parquet/data/<split>-00000-of-00001.parquet

``datasets.load_dataset("imagefolder", data_dir="hf")`` and
``datasets.load_dataset("parquet", data_dir="hf-parquet/data")`` (or the Hub's
own loader for a repository holding ``data/``) both recognise ``train``,
``val`` and ``test`` as splits. Why both: imagefolder is browsable and needs
nothing to write; Parquet is one file per split (the Hub's native format,
fast to stream) and needs pyarrow. Segmentation masks are not images here:
use the COCO, nnU-Net, MONAI or NIfTI exports for them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from mida.datasets.export.base import Exporter, Record, safe
from mida.datasets.export.reader import SeriesItem

RESERVED = ("image", "file_name", "labels", "split", "patient", "study", "series", "sop",
            "frame")


def class_columns(names: list[str]) -> dict[str, str]:
    """Classification label -> its column name (prefixed when it collides)."""
    return {n: (f"label_{n}" if n in RESERVED else n) for n in names}


def rows(item: SeriesItem, columns: dict[str, str]) -> list[dict[str, Any]]:
    """One row per image frame of the series (module docstring), without the image."""
    present: dict[tuple[str, int], set[str]] = defaultdict(set)
    for a in item.annotations:
        if a["kind"] == "mask" and a.get("mask_sha256") and a.get("geometry"):
            for key in item.slice_masks(a):
                present[key].add(a["label"])
        elif a["kind"] in ("bbox", "polygon") and a.get("SOPInstanceUID"):
            present[(a["SOPInstanceUID"], int(a.get("frame") or 1))].add(a["label"])
    classes = item.classifications()
    out = []
    for sop, frame in item.frames:
        labels = sorted(present.get((sop, frame), set()) | set(classes))
        row: dict[str, Any] = {
            "file_name": f"{safe(item.uid)}/{safe(sop)}_{frame}.png", "labels": labels,
            "split": item.split, "patient": item.meta["PatientID"],
            "study": item.meta["StudyInstanceUID"], "series": item.uid, "sop": sop,
            "frame": frame}
        for name, col in columns.items():
            row[col] = classes.get(name)
        out.append(row)
    return out


class HfExporter(Exporter):
    """Hugging Face imagefolder (module docstring)."""

    name = "hf"
    folder = "hf"
    modules = ("PIL",)
    summary = "Hugging Face imagefolder: hf/<split>/*.png + metadata.jsonl"

    def series(self, item: SeriesItem) -> Record:
        cols = class_columns([x.name for x in self.ctx.labels.classes])
        kept = []
        for row in rows(item, cols):
            png = item.png(row["sop"], row["frame"])
            if png is None:
                self.ctx.note(f"hf: series {item.uid}: frame {row['frame']} of {row['sop']} "
                              "could not be decoded here; left out")
                continue
            self.ctx.writer.write(self.path(safe(item.split), row["file_name"]), png)
            kept.append(row)
        return {"rows": kept}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        per_split: dict[str, list[bytes]] = defaultdict(list)
        for meta, rec in records:
            for row in (rec or {}).get("rows", []):
                per_split[meta["split"]].append(
                    json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        for split, lines in sorted(per_split.items()):
            self.ctx.writer.write(self.path(safe(split), "metadata.jsonl"),
                                  b"".join(line + b"\n" for line in lines))


class HfParquetExporter(Exporter):
    """Hugging Face Parquet, one file per split (module docstring)."""

    name = "hf-parquet"
    folder = "hf-parquet"
    modules = ("pyarrow", "PIL")
    summary = "Hugging Face Parquet: hf-parquet/data/<split>-00000-of-00001.parquet"

    def schema(self) -> Any:
        import pyarrow as pa

        cols = class_columns([x.name for x in self.ctx.labels.classes])
        fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                  pa.field("labels", pa.list_(pa.string())), pa.field("split", pa.string()),
                  *[pa.field(c, pa.string()) for c in cols.values()],
                  pa.field("patient", pa.string()), pa.field("study", pa.string()),
                  pa.field("series", pa.string()), pa.field("sop", pa.string()),
                  pa.field("frame", pa.int32())]
        string = {"dtype": "string", "_type": "Value"}
        features: dict[str, Any] = {
            "image": {"_type": "Image"}, "labels": {"feature": string, "_type": "Sequence"},
            **{f.name: string for f in fields[2:-1]}, "frame": {"dtype": "int32",
                                                                "_type": "Value"}}
        meta = {"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True)}
        return pa.schema(fields, metadata=meta)

    def series(self, item: SeriesItem) -> Record:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = class_columns([x.name for x in self.ctx.labels.classes])
        table_rows = []
        for row in rows(item, cols):
            png = item.png(row["sop"], row["frame"])
            if png is None:
                self.ctx.note(f"hf-parquet: series {item.uid}: frame {row['frame']} of "
                              f"{row['sop']} could not be decoded here; left out")
                continue
            name = row.pop("file_name")
            table_rows.append({"image": {"bytes": png, "path": name}, **row})
        if not table_rows:
            return {"shard": None, "rows": 0}
        table = pa.Table.from_pylist(table_rows, schema=self.schema())
        rel = f"{self.ctx.work}/hf-parquet/{safe(item.uid)}.parquet"

        def produce(tmp: Path) -> None:
            pq.write_table(table, tmp, row_group_size=100)

        self.ctx.writer.adopt(rel, produce)
        return {"shard": rel, "rows": len(table_rows)}

    def finish(self, records: list[tuple[dict[str, Any], Record]]) -> None:
        import pyarrow.parquet as pq

        root = self.ctx.writer.root
        per_split: dict[str, list[str]] = defaultdict(list)
        for meta, rec in records:
            if rec and rec.get("shard"):
                per_split[meta["split"]].append(rec["shard"])
        schema = self.schema()
        for split, shards in sorted(per_split.items()):
            def produce(tmp: Path, shards: list[str] = shards) -> None:
                with pq.ParquetWriter(tmp, schema) as w:
                    for shard in shards:  # one series in memory at a time
                        w.write_table(pq.read_table(root / shard, schema=schema),
                                      row_group_size=100)

            self.ctx.writer.adopt(self.path("data", f"{safe(split)}-00000-of-00001.parquet"),
                                  produce)


__all__ = ["HfExporter", "HfParquetExporter", "class_columns", "rows"]
