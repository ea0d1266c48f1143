"""``mida cohort``, ``mida release`` and ``mida restrictions``.

Cohorts are expressions over the catalog (``mida.datasets.cohort`` documents
the language); releases freeze a cohort into an immutable, versioned dataset
(``mida.datasets.release``); restrictions keep data out of every release.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Annotated, Any

import typer

from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, kv, table

cohort_app = typer.Typer(no_args_is_help=True,
                         help="Cohorts: count and save expressions over the catalog.")
release_app = typer.Typer(no_args_is_help=True,
                          help="Releases: immutable, versioned datasets; export, card, package.")
restrictions_app = typer.Typer(
    no_args_is_help=True,
    help="Release restrictions: flags that keep data out of every release and export.")

WhereOpt = Annotated[str, typer.Option("--where", help="Cohort expression, e.g. "
                                       "\"modality = 'CT' and has_label('lesion')\".")]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _print_counts(c: dict[str, Any], title: str) -> None:
    console.print(f"[bold]{title}[/bold]: {c['patients']} patients, {c['studies']} studies, "
                  f"{c['series']} series, {c['instances']} instances, "
                  f"{c['bytes'] / 1e6:.1f} MB")
    for dim, groups in c.get("by", {}).items():
        table([{dim: k, **v} for k, v in groups.items()], title=f"by {dim.replace('_', ' ')}")


# ------------------------------------------------------------------ cohort

@cohort_app.command("count")
@handle_errors
def cohort_count(where: WhereOpt, json_out: JsonOpt = False) -> None:
    """Count what an expression selects (patients, studies, series, instances), by group."""
    from mida.datasets import cohort

    n = node()
    with n.catalog().session() as s:
        c = cohort.count(s, where, store=n.store()).as_dict()
    emit_json(c) if json_out else _print_counts(c, "cohort")


@cohort_app.command("save")
@handle_errors
def cohort_save(
    name: Annotated[str, typer.Argument(help="Cohort name.")],
    where: WhereOpt,
    description: Annotated[str, typer.Option(help="What the cohort is for.")] = "",
    replace: Annotated[bool, typer.Option("--replace",
                                          help="Change the expression of an existing cohort.")
                       ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Save an expression under a name, with its counts now."""
    from mida.datasets import cohort

    n = node()
    with n.catalog().session() as s:
        row, c = cohort.save(s, name, where, description=description, by=_user(),
                             replace=replace, store=n.store())
        s.commit()
        out = {"cohort": row.name, "expression": row.expression, **c.as_dict()}
    audit("cohort.save", {"cohort": name, "expression": where})
    emit_json(out) if json_out else _print_counts(out, f"cohort {name} saved")


@cohort_app.command("show")
@handle_errors
def cohort_show(name: Annotated[str, typer.Argument(help="Cohort name.")],
                json_out: JsonOpt = False) -> None:
    """Show a cohort's expression and its counts now (and when it was saved)."""
    from mida.datasets import cohort

    n = node()
    with n.catalog().session() as s:
        row = cohort.get(s, name)
        now = cohort.count(s, row.expression, store=n.store()).as_dict()
        out = {"cohort": row.name, "expression": row.expression,
               "description": row.description, "created": row.created.isoformat(),
               "created_by": row.created_by, "saved_counts": {
                   k: row.counts.get(k) for k in ("patients", "studies", "series", "instances")},
               "now": now}
    if json_out:
        emit_json(out)
        return
    kv({k: out[k] for k in ("cohort", "expression", "description", "created", "created_by",
                            "saved_counts")}, title=f"cohort {name}")
    _print_counts(now, "now")


@cohort_app.command("ls")
@handle_errors
def cohort_ls(json_out: JsonOpt = False) -> None:
    """List saved cohorts."""
    from mida.datasets import cohort

    with node().catalog().session() as s:
        rows = [{"cohort": r.name, "expression": r.expression,
                 "series (saved)": r.counts.get("series"), "created": r.created.date().isoformat()}
                for r in cohort.list_all(s)]
    emit_json(rows) if json_out else table(rows, title="cohorts")


# ------------------------------------------------------------------ release

@release_app.command("create")
@handle_errors
def release_create(
    name: Annotated[str, typer.Argument(help="Release name, e.g. liver-ct.")],
    version: Annotated[str, typer.Option(help="Semantic version X.Y.Z, higher than the last.")],
    cohort_name: Annotated[str | None, typer.Option("--cohort", help="A saved cohort.")] = None,
    where: Annotated[str | None, typer.Option(help="Or an expression.")] = None,
    split: Annotated[str, typer.Option(help="train/val/test percentages by patient.")
                     ] = "70/15/15",
    stratify: Annotated[str | None, typer.Option(
        help="Stratify by this label (classification value, or has the label).")] = None,
    seed: Annotated[int, typer.Option(help="Split seed: the same seed, the same split.")] = 0,
    include_drafts: Annotated[bool, typer.Option(
        "--include-drafts", help="Also pin draft annotations (default: submitted, reviewed, "
                                 "adjudicated).")] = False,
    description: Annotated[str, typer.Option(help="What the release is for.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Freeze a cohort into an immutable release: manifest, pinned labels, patient splits."""
    from mida.datasets import release

    spec = release.parse_split(split, stratify=stratify, seed=seed)
    statuses = (("draft", *release.DEFAULT_STATUSES) if include_drafts
                else release.DEFAULT_STATUSES)
    n = node()
    with n.catalog().session() as s:
        row = release.create(s, n.store(), name, version, cohort=cohort_name, expression=where,
                             split=spec, statuses=statuses, description=description,
                             by=_user())
        s.commit()
        out = release.describe(row)
    audit("release.create", {"release": out["release"], "manifest": out["manifest_sha256"]})
    if json_out:
        emit_json(out)
        return
    c = out["counts"]
    console.print(f"release [bold]{out['release']}[/bold]: {c['patients']} patients, "
                  f"{c['series']} series, {c['instances']} instances, "
                  f"{c['annotations']} annotations; manifest {out['manifest_sha256'][:12]}")
    table([{"split": k, **v} for k, v in c["splits"].items()], title="splits (by patient)")
    ex = c["excluded"]
    if ex["total"]["series"]:
        table([{"reason": r, **v} for r, v in ex["by_reason"].items()],
              title=f"left out by restrictions ({ex['total']['series']} series)")


@release_app.command("ls")
@handle_errors
def release_ls(name: Annotated[str | None, typer.Argument(help="Only this name.")] = None,
               json_out: JsonOpt = False) -> None:
    """List releases."""
    from mida.datasets import release

    with node().catalog().session() as s:
        rows = [release.describe(r) for r in release.list_all(s, name)]
    if json_out:
        emit_json(rows)
        return
    table([{"release": r["release"], "patients": r["counts"]["patients"],
            "series": r["counts"]["series"], "annotations": r["counts"]["annotations"],
            "created": r["created"][:10], "manifest": r["manifest_sha256"][:12]}
           for r in rows], title="releases")


@release_app.command("show")
@handle_errors
def release_show(ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z (or NAME: the latest).")],
                 manifest: Annotated[bool, typer.Option(
                     "--manifest", help="Print the whole manifest (JSON).")] = False,
                 json_out: JsonOpt = False) -> None:
    """Show a release (or its manifest)."""
    from mida.datasets import release

    n = node()
    with n.catalog().session() as s:
        row = release.get(s, ref)
        out: dict[str, Any] = (release.load_manifest(n.store(), row) if manifest
                               else release.describe(row))
    emit_json(out) if (json_out or manifest) else kv(out, title=out["release"])


@release_app.command("diff")
@handle_errors
def release_diff(a: Annotated[str, typer.Argument(help="NAME@X.Y.Z (older).")],
                 b: Annotated[str, typer.Argument(help="NAME@X.Y.Z (newer).")],
                 json_out: JsonOpt = False) -> None:
    """What changed between two releases: series, patients' splits, annotations, counts."""
    from mida.datasets import release

    n = node()
    with n.catalog().session() as s:
        d = release.diff(release.load_manifest(n.store(), release.get(s, a)),
                         release.load_manifest(n.store(), release.get(s, b)))
    if json_out:
        emit_json(d)
        return
    console.print(f"[bold]{d['from']} -> {d['to']}[/bold]")
    table([{"what": k, "from": v[0], "to": v[1]} for k, v in d["counts"].items()],
          title="counts")
    for key in ("series_added", "series_removed", "series_files_changed", "annotations_added",
                "annotations_removed"):
        if d[key]:
            console.print(f"{key.replace('_', ' ')} ({len(d[key])}): " + ", ".join(d[key][:20])
                          + (" ..." if len(d[key]) > 20 else ""))
    if d["annotations_revised"]:
        table([{"annotation": u, "from revision": x, "to revision": y}
               for u, x, y in d["annotations_revised"]], title="annotations revised")
    console.print(f"patients added {d['patients_added']}, removed {d['patients_removed']}, "
                  f"moved between splits {len(d['patients_moved'])}")


# ------------------------------------------------------------------ restrictions

@restrictions_app.command("add")
@handle_errors
def restrictions_add(
    reason: Annotated[str, typer.Argument(help="personal_data | trade_secret | contract | "
                                               "consent_withdrawn | embargo")],
    collection: Annotated[str | None, typer.Option(help="A collection name.")] = None,
    patient: Annotated[str | None, typer.Option(help="A pseudonymous PatientID.")] = None,
    study: Annotated[str | None, typer.Option(help="A Study Instance UID.")] = None,
    series: Annotated[str | None, typer.Option(help="A Series Instance UID.")] = None,
    until: Annotated[str | None, typer.Option(help="Embargo end, YYYY-MM-DD.")] = None,
    note: Annotated[str, typer.Option(help="Why (kept with the flag).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Flag a collection, patient, study or series: releases leave it out."""
    from mida.errors import DatasetError
    from mida.sharing import restrictions

    given = {k: v for k, v in (("collection", collection), ("patient", patient),
                               ("study", study), ("series", series)) if v}
    if len(given) != 1:
        raise DatasetError("give exactly one of --collection, --patient, --study, --series")
    (level, target), = given.items()
    try:
        day = dt.date.fromisoformat(until) if until else None
    except ValueError:
        raise DatasetError(f"--until {until!r}: write the date as YYYY-MM-DD") from None
    with node().catalog().session() as s:
        row = restrictions.add(s, level, target, reason, until=day, note=note, by=_user())
        s.commit()
        out = restrictions.describe(s, row)
    audit("restrictions.add", {"id": out["id"], "level": level, "reason": reason})
    emit_json(out) if json_out else console.print(
        f"restriction {out['id']}: {level} {target} is {reason}"
        + (f" until {until}" if until else ""))


@restrictions_app.command("ls")
@handle_errors
def restrictions_ls(all_: Annotated[bool, typer.Option("--all", help="Include lifted ones.")
                                    ] = False,
                    json_out: JsonOpt = False) -> None:
    """List restrictions in force (or all of them)."""
    from mida.sharing import restrictions

    with node().catalog().session() as s:
        rows = restrictions.list_all(s, include_lifted=all_)
    emit_json(rows) if json_out else table(
        [{k: r[k] for k in ("id", "level", "target", "reason", "until", "created_by", "lifted")}
         for r in rows], title="restrictions")


@restrictions_app.command("lift")
@handle_errors
def restrictions_lift(restriction_id: Annotated[int, typer.Argument(help="Restriction id.")],
                      json_out: JsonOpt = False) -> None:
    """Lift a restriction (its record stays)."""
    from mida.sharing import restrictions

    with node().catalog().session() as s:
        row = restrictions.lift(s, restriction_id, by=_user())
        s.commit()
        out = restrictions.describe(s, row)
    audit("restrictions.lift", {"id": restriction_id})
    emit_json(out) if json_out else console.print(f"restriction {restriction_id} lifted")


# ------------------------------------------------------------------ commands of other modules
# (export, card, package register themselves below, one line each)
from mida.cli.cards import card_command, package_command  # noqa: E402

release_app.command("card")(card_command)
release_app.command("package")(package_command)

from mida.cli.exports import export_command  # noqa: E402

release_app.command("export")(export_command)
