"""``mida deid``: de-identify files standalone, verify outputs, list profiles.

These commands need no node: ``run`` takes a key file (or uses the node's key
when ``MIDA_HOME`` is initialised), ``verify`` compares folders, ``profiles``
lists the shipped profiles and the node's own. Exit codes: 0 success, 1 a
mida error or (``verify``) a leak, 2 bad usage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from mida.cli.output import console, emit_json, err_console, table
from mida.config import get_settings
from mida.errors import ConfigError, DeidError, MidaError

if TYPE_CHECKING:
    from mida.deid import Profile

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="De-identify DICOM files standalone, verify outputs, list profiles.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _handle(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {exc}")
    return typer.Exit(1)


def _home() -> Path | None:
    home = get_settings().home
    return home if home.exists() else None


def _key(key_file: Path | None) -> bytes:
    if key_file is not None:
        try:
            key = bytes.fromhex(key_file.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {key_file} ({exc.strerror})") from exc
        except ValueError as exc:
            raise ConfigError(f"{key_file} must hold a key as hexadecimal text") from exc
        if len(key) < 32:
            raise ConfigError(f"the key in {key_file} is {len(key)} bytes; 32 or more are needed")
        return key
    settings = get_settings()
    if not settings.node_file.exists():
        raise ConfigError(
            f"no de-identification key: pass --key-file K (a file of 64 hex characters, e.g. "
            f"from `python -c \"import secrets; print(secrets.token_hex(32))\"`) or run "
            f"`mida init` to create a node at {settings.home}"
        )
    from mida.node import load_node

    return load_node(settings).key()


def _profile(name: str, options: list[str]) -> Profile:
    from mida.deid import Profile, get_profile
    from mida.deid.profile_files import available_profiles, option_key

    files = available_profiles(_home())
    prof = files[name] if name in files else get_profile(name)
    if not options:
        return prof
    extra = {option_key(o) for o in options}
    merged = frozenset(prof.options | extra)
    # Different options are a different behaviour: record a different version.
    tag = hashlib.sha256(",".join(sorted(merged)).encode()).hexdigest()[:6]
    return Profile(name=prof.name, version=f"{prof.version[:8]}-o{tag}", options=merged,
                   overrides=dict(prof.overrides), description=prof.description)


@app.command()
def run(
    inputs: Annotated[list[Path], typer.Argument(help="Files, folders, zip or tar(.gz) archives.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the de-identified files.")],
    profile: Annotated[str, typer.Option(help="Profile name (see `mida deid profiles`).")] = (
        "default"),
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="Add a PS3.15 option, e.g. rtnDevIdOpt or retain-device-identity; "
                         "repeatable.")] = None,
    key_file: Annotated[Path | None, typer.Option(
        help="Key as hex text (64 characters); the node's key when omitted.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    json_out: JsonOpt = False,
) -> None:
    """De-identify INPUT... into --out, one file per instance named by its new SOP Instance UID.

    Inputs that cannot be made safe are listed with a reason and never written.
    """
    from mida.ingest.deid_run import run_deid
    from mida.ingest.processor import quiet_pydicom

    try:
        quiet_pydicom()
        prof = _profile(profile, option or [])
        report = run_deid(inputs, out, _key(key_file), prof, workers, settings=get_settings())
    except (MidaError, FileNotFoundError) as exc:
        raise _handle(exc) from None
    if json_out:
        emit_json(report.to_dict())
        return
    console.print(f"{len(report.written)} written to {report.out_dir} (profile {report.profile} "
                  f"v{report.profile_version}), {report.duplicates} duplicate(s), "
                  f"{len(report.refused)} refused, in {report.seconds:.1f}s")
    if report.refused:
        table([{"input": escape(r.ref), "reason": r.reason, "message": escape(r.message)}
               for r in report.refused], title="refused inputs (not written)")


@app.command()
def verify(
    original: Annotated[Path, typer.Argument(help="Original file or folder.")],
    deidentified: Annotated[Path, typer.Argument(help="De-identified file or folder.")],
    json_out: JsonOpt = False,
) -> None:
    """Search every de-identified file for identifiers of the originals; exit 1 on any leak.

    Leaks are shown masked (first character and length), never in full.
    """
    from mida.deid.verify import verify_pair
    from mida.ingest.processor import quiet_pydicom

    try:
        quiet_pydicom()
        report = verify_pair([original], [deidentified])
    except (MidaError, FileNotFoundError) as exc:
        raise _handle(exc) from None
    if json_out:
        emit_json(report.to_dict())
    else:
        for leak in report.leaks:
            console.print(f"[bold red]LEAK[/bold red] {escape(str(leak))}", highlight=False,
                          soft_wrap=True)
        n_ids = sum(report.identifiers.values())
        console.print(f"{report.outputs} output(s) checked against {n_ids} identifiers from "
                      f"{report.originals} original(s): {len(report.leaks)} leak(s)")
        if report.unreadable:
            err_console.print(f"[yellow]warning:[/yellow] {len(report.unreadable)} output(s) "
                              "are not DICOM; they were searched as raw bytes only")
        if report.pixels_unchecked:
            err_console.print(f"[yellow]warning:[/yellow] pixels not checked (OCR unavailable) "
                              f"in {len(report.pixels_unchecked)} burned-in-risk image(s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def profiles(json_out: JsonOpt = False) -> None:
    """List de-identification profiles: name, version, options and source."""
    from mida.deid import get_profile, list_profiles
    from mida.deid.profile_files import available_profiles, profile_files

    try:
        home = _home()
        files = profile_files(home)
        found = available_profiles(home)
    except DeidError as exc:
        raise _handle(exc) from None
    rows: list[dict[str, Any]] = []
    for name in sorted(set(list_profiles()) | set(found)):
        p = found.get(name) or get_profile(name)
        rows.append({"name": p.name, "version": p.version, "options": sorted(p.options),
                     "overrides": len(p.overrides),
                     "source": str(files[name]) if name in files else "built-in",
                     "description": p.description})
    if json_out:
        emit_json(rows)
        return
    table([{**r, "options": ", ".join(r["options"])} for r in rows], title="profiles",
          columns=["name", "version", "options", "overrides", "source"])


__all__ = ["app"]
