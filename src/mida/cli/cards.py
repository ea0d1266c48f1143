"""``mida release card`` and ``mida release package``.

Thin faces over :mod:`mida.datasets.card` (the datasheet, Croissant, DCAT and
de-identification report of a release) and :mod:`mida.datasets.package` (a
BagIt bag for the national data center). ``mida.cli.datasets`` registers both
under ``mida release``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, err_console, kv

RefArg = Annotated[str, typer.Argument(help="NAME@X.Y.Z (or NAME: the latest version).")]
LicenseOpt = Annotated[str | None, typer.Option(
    "--license", help="Licence to state (SPDX id or URL); default: the collections' own, "
                      "else the card says it is not set.")]


@handle_errors
def card_command(
    ref: RefArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the card files (default: MIDA_HOME/cards/NAME@X.Y.Z).")] = None,
    license: LicenseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a release's dataset card: datasheet (Markdown, HTML), Croissant, DCAT, de-id report."""
    from mida.datasets import card, release

    n = node()
    with n.catalog().session() as s:
        row = release.get(s, ref)
        c = card.build_card(s, n.store(), row, home=n.settings.home, license=license)
    folder = out if out is not None else Path(n.settings.home) / "cards" / c.release
    paths = card.write_card(c, folder)
    audit("release.card", {"release": c.release, "out": str(folder),
                           "manifest": c.manifest_sha256})
    if json_out:
        emit_json({"release": c.release, "out": str(folder), "files": [str(p) for p in paths],
                   "programme_table": c.programme_table})
        return
    t = c.programme_table
    summary: dict[str, Any] = {
        "release": c.release, "volume": f"{t['volume']['records']}; {t['volume']['size']}",
        "time range": f"{t['time_range']['start']} to {t['time_range']['end']}",
        "labels": ", ".join(f"{a['label']} ({a['annotations']})"
                            for a in t["annotation_items"]) or "none",
    }
    kv(summary, title=f"dataset card {c.release}")
    console.print(f"card written to {folder}: " + ", ".join(p.name for p in paths))


@handle_errors
def package_command(
    ref: RefArg,
    out: Annotated[Path, typer.Option(help="Bag folder to create (new or empty).")],
    with_data: Annotated[bool, typer.Option(
        "--with-data", help="Also put the data in the bag (see --data-format).")] = False,
    data_format: Annotated[str, typer.Option(
        help="Export format(s) of the data with --with-data, e.g. dicom or dicom,nifti.")
                           ] = "dicom",
    license: LicenseOpt = None,
    contact_name: Annotated[str | None, typer.Option(help="Contact-Name in bag-info.txt.")
                            ] = None,
    contact_email: Annotated[str | None, typer.Option(help="Contact-Email in bag-info.txt.")
                             ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a release as a BagIt bag (manifest, card, tag files) for the national data center."""
    import bagit

    from mida.datasets import package, release

    n = node()
    bar = Progress(TextColumn("[bold]package[/bold]"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err_console, disable=json_out or not with_data)
    task = bar.add_task("series", total=None)

    def on_series(p: Any) -> None:  # an ExportProgress, after each series of the data
        bar.update(task, completed=p.series_done, total=p.series_total)

    with bar, n.catalog().session() as s:
        row = release.get(s, ref)
        name = f"{row.name}@{row.version}"
        path = package.package(s, n.store(), row, out,
                               include_data=data_format if with_data else None,
                               home=n.settings.home, license=license,
                               contact_name=contact_name, contact_email=contact_email,
                               progress=on_series)
    info = bagit.Bag(str(path)).info
    oxum = info.get("Payload-Oxum", "")
    audit("release.package", {"release": name, "out": str(path), "with_data": with_data,
                              "payload_oxum": oxum})
    nbytes, _, nfiles = str(oxum).partition(".")
    if json_out:
        emit_json({"release": name, "out": str(path), "payload_files": int(nfiles or 0),
                   "payload_bytes": int(nbytes or 0), "bag_info": info})
        return
    console.print(f"bag for [bold]{name}[/bold] written to {path}: {nfiles} payload files, "
                  f"{info.get('Bag-Size', '')}; check it with `bagit.py --validate {path}`")


__all__ = ["card_command", "package_command"]
