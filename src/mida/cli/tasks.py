"""``mida tasks``, ``mida models``, ``mida annotations agreement|preannotate``.

The multi-reader workflow (:mod:`mida.annotations.tasks`): create a task,
follow its progress, work through a worklist (annotate, submit, review,
adjudicate), measure agreement; and AI pre-annotation with registered models
(:mod:`mida.annotations.models`).

A reader who finds nothing in a case says so with ``mida tasks submit T
--case N --reader a``: with no annotation of theirs in the case, that records
an explicit *nothing found*; otherwise it submits their drafts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mida.cli.annotations import annotations_app
from mida.cli.common import JsonOpt, audit, handle_errors, node
from mida.cli.output import console, emit_json, kv, table
from mida.errors import AnnotationError

tasks_app = typer.Typer(no_args_is_help=True,
                        help="Multi-reader annotation tasks: worklists, review, adjudication.")
models_app = typer.Typer(no_args_is_help=True, help="Registered pre-annotation models.")

TaskArg = Annotated[str, typer.Argument(help="Task name.")]
CaseOpt = Annotated[int, typer.Option("--case", help="Case number (tasks show --cases).")]


def _names(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


@tasks_app.command("create")
@handle_errors
def tasks_create(
    name: Annotated[str, typer.Argument(help="A name for the task.")],
    collection: Annotated[str, typer.Option(help="Collection whose series are read.")],
    schema: Annotated[str, typer.Option(help="Label schema (name or name@version).")],
    readers: Annotated[str, typer.Option(help="Readers (user names), comma-separated.")],
    per_case: Annotated[int, typer.Option("--per-case", help="Readers per case.")] = 1,
    reviewers: Annotated[str | None, typer.Option(
        help="Reviewers, comma-separated: every read is reviewed before it counts.")] = None,
    adjudicators: Annotated[str | None, typer.Option(
        help="Adjudicators, comma-separated (default: any user who did not read the case).")
    ] = None,
    series_filter: Annotated[list[str] | None, typer.Option(
        "--series-filter", help="KEY=VALUE (wildcards * ?), e.g. Modality=CT; repeatable.")
    ] = None,
    unblinded: Annotated[bool, typer.Option(
        "--unblinded", help="Readers see each other's annotations (default: blinded).")] = False,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the reading order and assignment (default: drawn and recorded).")
    ] = None,
    dice_threshold: Annotated[float, typer.Option(
        help="Mask Dice below which two readers disagree.")] = 0.7,
    created_by: Annotated[str | None, typer.Option("--by", help="Who creates the task.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a task: one case per image series, each assigned to --per-case readers."""
    from mida.annotations import tasks

    with node().catalog().session() as s:
        task = tasks.create_task(
            s, name=name, collection=collection, schema=schema, readers=_names(readers),
            per_case=per_case, reviewers=_names(reviewers), adjudicators=_names(adjudicators),
            blinded=not unblinded, series_filter=tasks.parse_filter(series_filter or []),
            seed=seed, dice_threshold=dice_threshold, created_by=created_by)
        out = tasks.summary(s, task)
        loads: dict[str, int] = {}
        for c in tasks.task_cases(s, task):
            for r in tasks.case_readers(s, c):
                loads[r] = loads.get(r, 0) + 1
        out["cases_per_reader"] = loads
    audit("tasks.create", {"task": name, "cases": out["cases"], "readers": out["readers"]})
    if json_out:
        emit_json(out)
        return
    console.print(f"task [bold]{name}[/bold]: {out['cases']} case(s), "
                  f"{per_case} reader(s) per case, seed {out['seed']}")
    table([{"reader": r, "cases": n} for r, n in loads.items()], title="cases per reader")


@tasks_app.command("ls")
@handle_errors
def tasks_ls(json_out: JsonOpt = False) -> None:
    """List tasks with their case counts."""
    from mida.annotations import tasks

    with node().catalog().session() as s:
        rows = tasks.list_tasks(s)
    if json_out:
        emit_json(rows)
        return
    table([{"task": r["task"], "collection": r["collection"], "schema": r["schema"],
            "readers": ", ".join(r["readers"]), "cases": r["cases"],
            **r["by_state"]} for r in rows], title="annotation tasks")


@tasks_app.command("show")
@handle_errors
def tasks_show(task: TaskArg,
               cases: Annotated[bool, typer.Option("--cases", help="List every case.")] = False,
               json_out: JsonOpt = False) -> None:
    """A task's settings and progress per reader and step."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task)
        out = tasks.progress(s, n.store(), t)
        if cases:
            out["case_list"] = [
                {**tasks.case_row(s, c),
                 "readers": ", ".join(f"{a.reader}:{a.state}"
                                      for a in tasks.assignments(s, c, "read")),
                 "others": ", ".join(f"{a.step} {a.reader}:{a.state}"
                                     for a in tasks.assignments(s, c) if a.step != "read")}
                for c in tasks.task_cases(s, t)]
    if json_out:
        emit_json(out)
        return
    kv({k: v for k, v in out.items() if k not in ("progress", "adjudication", "case_list")},
       title=out["task"])
    table(out["progress"], title="progress per reader and step")
    if out["adjudication"]:
        table([{"case": c["case"], "why": "; ".join(c["reasons"])}
               for c in out["adjudication"]], title="cases awaiting adjudication")
    if cases:
        table(out["case_list"], title="cases")


@tasks_app.command("worklist")
@handle_errors
def tasks_worklist(
    reader: Annotated[str, typer.Option(help="Whose worklist.")],
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """A person's open cases: reads to do, reviews and adjudications waiting."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task) if task else None
        rows = tasks.worklist(s, n.store(), reader, t)
    if json_out:
        emit_json(rows)
    else:
        table(rows, title=f"worklist of {reader}")


@tasks_app.command("case")
@handle_errors
def tasks_case(task: TaskArg, case: CaseOpt,
               viewer: Annotated[str | None, typer.Option(
                   "--as", help="Show what this person may see (blinding applies).")] = None,
               json_out: JsonOpt = False) -> None:
    """The annotations of one case, as a given person may see them."""
    from mida.annotations import tasks

    with node().catalog().session() as s:
        t = tasks.get_task(s, task)
        c = tasks.get_case(s, t, case)
        rows = tasks.case_annotations(s, t, c, viewer)
        head = tasks.case_row(s, c)
    if json_out:
        emit_json({**head, "annotations": rows})
        return
    kv(head, title=f"{task} case {case}")
    table([{"uid": r["uid"], "label": r["label"], "reader": r["reader"], "status": r["status"],
            "rev": r["revision"], "data": r["data"]} for r in rows], title="annotations")


def _content(label_type: str, value: str | None, text: str | None,
             mask: Path | None) -> tuple[dict[str, Any], Any]:
    import numpy as np

    if mask is not None:
        try:
            arr = np.load(mask, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AnnotationError(f"{mask.name}: not a NumPy .npy array ({exc})") from None
        return {}, arr.astype(bool)
    if text is not None:
        return {"text": text}, None
    if value is None:
        raise AnnotationError("give the content: --value (classification or measurement), "
                              "--text, or --mask FILE.npy")
    if label_type == "measurement":
        try:
            return {"value": float(value)}, None
        except ValueError:
            raise AnnotationError(f"a measurement is a number, not {value!r}") from None
    return {"value": value}, None


@tasks_app.command("annotate")
@handle_errors
def tasks_annotate(
    task: TaskArg, case: CaseOpt,
    reader: Annotated[str, typer.Option(help="The reader.")],
    label: Annotated[str | None, typer.Option(help="Schema label.")] = None,
    from_uid: Annotated[str | None, typer.Option(
        "--from", help="Take this model pre-annotation of the case as your own.")] = None,
    value: Annotated[str | None, typer.Option(help="Classification value or measurement.")
                     ] = None,
    text: Annotated[str | None, typer.Option(help="Free-text finding.")] = None,
    mask: Annotated[Path | None, typer.Option(
        help="Boolean .npy array on the series grid [slice, row, column].")] = None,
    instance: Annotated[str | None, typer.Option(help="SOP Instance UID (image labels).")
                        ] = None,
    submit: Annotated[bool, typer.Option("--submit", help="Store it as submitted.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a reader's annotation to a case of a task (drafts until 'tasks submit')."""
    from mida.annotations import store, tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task)
        c = tasks.get_case(s, t, case)
        status = "submitted" if submit else "draft"
        if from_uid is not None:
            rev = tasks.adopt(s, n.store(), t, c, reader=reader, uid=from_uid, status=status)
        elif label is None:
            raise AnnotationError("give --label (and the content), or --from UID")
        else:
            lb = tasks.task_schema(s, t).label(label)
            data, arr = _content(lb.type, value, text, mask)
            rev = tasks.annotate(s, n.store(), t, c, reader=reader, label=label, data=data,
                                 mask=arr, sop_instance_uid=instance, status=status)
        ann = s.get(store.Annotation, rev.annotation_id)
        assert ann is not None
        out = {"uid": ann.uid, "case": case, "status": rev.status, "case_state": c.state}
    audit("tasks.annotate", {"task": task, "case": case, "reader": reader, "label": label,
                             "from": from_uid})
    if json_out:
        emit_json(out)
    else:
        console.print(f"annotation {out['uid']} ({rev.status}) on case {case}")


@tasks_app.command("submit")
@handle_errors
def tasks_submit(task: TaskArg, case: CaseOpt,
                 reader: Annotated[str, typer.Option(help="The reader submitting.")],
                 comment: Annotated[str, typer.Option(help="A note.")] = "",
                 json_out: JsonOpt = False) -> None:
    """Submit a case: drafts become submitted; with no annotation, 'nothing found'."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task)
        out = tasks.submit(s, n.store(), t, tasks.get_case(s, t, case), reader, comment)
    audit("tasks.submit", {"task": task, "case": case, "reader": reader,
                           "nothing_found": out["nothing_found"]})
    if json_out:
        emit_json(out)
    else:
        what = "nothing found" if out["nothing_found"] else f"{out['annotations']} annotation(s)"
        console.print(f"case {case} submitted by {reader} ({what}); case is {out['case_state']}")


@tasks_app.command("review")
@handle_errors
def tasks_review(
    task: TaskArg, case: CaseOpt,
    by: Annotated[str, typer.Option("--by", help="The reviewer.")],
    accept: Annotated[bool, typer.Option("--accept/--return",
                                         help="Accept the work, or return it to the reader.")],
    reader: Annotated[str | None, typer.Option(help="Only this reader's work.")] = None,
    comment: Annotated[str, typer.Option(help="Required when returning.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Review readers' submitted work: accept it, or return it with a comment."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task)
        out = tasks.review(s, n.store(), t, tasks.get_case(s, t, case), reviewer=by,
                           accept=accept, reader=reader, comment=comment)
    audit("tasks.review", {"task": task, "case": case, "by": by, "accept": accept})
    if json_out:
        emit_json(out)
    else:
        console.print(f"case {case}: {'accepted' if accept else 'returned'}; "
                      f"case is {out['case_state']}")


@tasks_app.command("adjudicate")
@handle_errors
def tasks_adjudicate(
    task: TaskArg, case: CaseOpt,
    by: Annotated[str, typer.Option("--by", help="The adjudicator.")],
    accept: Annotated[str | None, typer.Option(help="Accept this reader's annotations.")
                      ] = None,
    consensus: Annotated[bool, typer.Option(
        "--consensus", help="Majority vote for labels, STAPLE for masks.")] = False,
    comment: Annotated[str, typer.Option(help="A note on the decision.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Adjudicate a case: new annotations with status adjudicated (readers' stay as they are)."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        t = tasks.get_task(s, task)
        out = tasks.adjudicate(s, n.store(), t, tasks.get_case(s, t, case), by=by,
                               accept=accept, consensus=consensus, comment=comment)
    audit("tasks.adjudicate", {"task": task, "case": case, "by": by, "method": out["method"],
                               "created": len(out["created"])})
    if json_out:
        emit_json(out)
        return
    console.print(f"case {case} adjudicated by {by} ({out['method']}): "
                  f"{len(out['created'])} annotation(s)")
    for note in out["notes"]:
        console.print(f"  {note}")


@models_app.command("ls")
@handle_errors
def models_ls(json_out: JsonOpt = False) -> None:
    """Models registered in the mida.models entry point group."""
    from mida.annotations.models import list_models

    rows = list_models()
    if json_out:
        emit_json(rows)
        return
    table([{**r, "labels": ", ".join(r.get("labels", []))} for r in rows],
          title="pre-annotation models")


@annotations_app.command("confirm")
@handle_errors
def annotations_confirm(
    uid: Annotated[str, typer.Argument(help="Annotation UID of a draft (e.g. a model's).")],
    by: Annotated[str, typer.Option("--by", help="The person confirming it.")],
    mask: Annotated[Path | None, typer.Option(
        help="A corrected mask (.npy on the series grid) replacing the draft's.")] = None,
    value: Annotated[str | None, typer.Option(help="A corrected value.")] = None,
    comment: Annotated[str, typer.Option(help="A note on the change.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Confirm a draft, or correct it: a new revision (submitted, by you); the draft stays."""
    from mida.annotations import store

    n = node()
    with n.catalog().session() as s:
        ann = store.get(s, uid)
        if store.latest(s, ann).status != "draft":
            raise AnnotationError(f"annotation {uid} is not a draft; only drafts are "
                                  "confirmed (see 'mida annotations show --history')")
        data, arr = (None, None) if mask is None and value is None else _content(
            ann.kind, value, None, mask)
        extra: dict[str, Any] = {}
        if data is not None or arr is not None:
            extra["model_version"] = None  # corrected: the content is no longer the model's
        rev = store.revise(s, n.store(), ann, author=by, status="submitted",
                           data=data if mask is None else None, mask=arr, comment=comment,
                           **extra)
        out = store.view(s, ann, rev)
    audit("annotations.confirm", {"annotation": uid, "by": by, "revision": out["revision"],
                                  "corrected": mask is not None or value is not None})
    if json_out:
        emit_json(out)
    else:
        console.print(f"annotation {uid}: revision {out['revision']} submitted by {by}")


@annotations_app.command("agreement")
@handle_errors
def annotations_agreement(
    task: Annotated[str, typer.Option(help="The task whose readers are compared.")],
    label: Annotated[str | None, typer.Option(help="Only this label.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Inter-reader agreement: Cohen's and Fleiss' kappa; Dice, IoU, HD95 (mm) for masks."""
    from mida.annotations import tasks

    n = node()
    with n.catalog().session() as s:
        out = tasks.agreement_report(s, n.store(), tasks.get_task(s, task), label)
    if json_out:
        emit_json(out)
        return
    console.print(f"task [bold]{out['task']}[/bold]: {out['cases_read']} case(s) read")
    for name, rep in out["labels"].items():
        if rep["type"] == "classification":
            table(rep["pairs"], title=f"{name}: Cohen's kappa per reader pair")
            kv(rep["fleiss"], title=f"{name}: Fleiss' kappa")
        else:
            table([{**p, "readers": " - ".join(p["readers"])} for p in rep["pairs"]],
                  title=f"{name}: mean Dice, IoU, HD95 (mm) per reader pair")
            table([{"reader": r, **v} for r, v in rep["vs_consensus"].items()],
                  title=f"{name}: each reader against the STAPLE consensus")


@annotations_app.command("preannotate")
@handle_errors
def annotations_preannotate(
    model: Annotated[str, typer.Option(help="Registered model (mida models ls).")],
    schema: Annotated[str, typer.Option(help="Label schema (name or name@version).")],
    label: Annotated[str, typer.Option(help="The schema label the model's findings get.")],
    series: Annotated[list[str] | None, typer.Option(help="Series UID; repeatable.")] = None,
    task: Annotated[str | None, typer.Option(help="Every case of this task.")] = None,
    collection: Annotated[str | None, typer.Option(help="Every image series of it.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Model parameter KEY=VALUE, e.g. threshold=100; repeatable.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a model; its findings become draft annotations for a person to confirm or correct."""
    from mida.annotations.models import parse_params, preannotate

    n = node()
    with n.catalog().session() as s:
        result = preannotate(s, n.store(), model=model, schema=schema, label=label,
                             series=series or None, task=task, collection=collection,
                             params=parse_params(param or []))
    audit("annotations.preannotate", {"model": result.model, "version": result.version,
                                      "created": len(result.created), "series": result.series})
    if json_out:
        emit_json(result.as_dict())
        return
    console.print(f"{len(result.created)} draft annotation(s) by {result.model} "
                  f"{result.version} on {result.series} series")
    for line in result.skipped:
        console.print(f"  [yellow]skipped:[/yellow] {line}")
