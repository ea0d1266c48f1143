"""``mida release export``: a release in training formats, one streaming pass.

Registered on the ``release`` group by :mod:`mida.cli.datasets`; the work is
:func:`mida.datasets.export.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, err_console, table

_FORMATS = "dicom, nifti, nnunet, monai, coco, hf, hf-parquet"


@handle_errors
def export_command(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z (or NAME: the latest version).")],
    formats: Annotated[list[str], typer.Option(
        "--format", "-f",
        help=f"Format(s): {_FORMATS}; repeat the option or separate with commas.")],
    out: Annotated[Path, typer.Option(
        help="Export folder: new, empty, or an earlier (or interrupted) export of the same "
             "release and formats, which is completed.")],
    dataset_id: Annotated[int, typer.Option(
        help="nnU-Net dataset number (DatasetNNN_<name>), 1-999.")] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Export a release (DICOM, NIfTI, nnU-Net, MONAI, COCO, Hugging Face) in one pass.

    Reads the release's manifest and stored files only, so the same release
    always gives the same bytes; series that a restriction now flags are left
    out and counted. An interrupted export resumes when run again.
    """
    from mida.datasets import release
    from mida.datasets.export import ExportProgress, export

    n = node()
    progress = Progress(
        TextColumn("[bold]export[/bold]"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[series]}"), TimeElapsedColumn(),
        console=err_console, disable=json_out, transient=False)
    task = progress.add_task("export", total=None, series="")

    def on_progress(p: ExportProgress) -> None:
        label = ("writing dataset files" if p.phase == "finish"
                 else f"series {p.series_done}/{p.series_total}"
                 + (" (resumed)" if p.resumed else ""))
        progress.update(task, completed=p.bytes_done, total=p.bytes_total, series=label)

    with n.catalog().session() as s:
        row = release.get(s, ref)
        with progress:
            result = export(s, n.store(), row, formats, out, progress=on_progress,
                            dataset_id=dataset_id)
    d = result.as_dict()
    audit("release.export", {"release": d["release"], "formats": d["formats"],
                             "manifest": d["manifest_sha256"], "files": d["files"],
                             "excluded_series": d["excluded"]["series"]})
    if json_out:
        emit_json(d)
        return
    console.print(f"[bold]{d['release']}[/bold] -> {out}: {', '.join(d['formats'])}; "
                  f"{d['series']} series, {d['files']} files, {d['bytes'] / 1e6:.1f} MB"
                  + (f" ({d['resumed_series']} series resumed)" if d["resumed_series"] else ""))
    ex = d["excluded"]
    if ex["series"]:
        console.print(f"[yellow]{ex['series']} series left out[/yellow]: a restriction added "
                      "since the release flags them")
        table([{"reason": k, "series": v} for k, v in ex["by_reason"].items()],
              title="left out by restrictions")
    for note in d["notes"]:
        console.print(f"[dim]note:[/dim] {note}")
    console.print(f"report: {out / 'mida-export.json'}")


__all__ = ["export_command"]
