"""The datasheet of a dataset card, as Markdown and as one self-contained HTML page.

Both renderings come from one neutral document (a list of sections holding
paragraphs, tables, bullet lists and charts), so they always say the same
thing. Every piece of text that comes from the catalog (descriptions, names,
labels, readers) is escaped: HTML entities in the page and in the Markdown
(where raw HTML would otherwise pass through a renderer), backslashes for
Markdown's own markup. The page has no script and loads nothing: styles are
inline, charts are inline SVG, and a Content-Security-Policy forbids the rest.
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass
from typing import Any

from mida.datasets.card_data import LICENSE_NOT_SET, Chart


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Fields:
    """A two-column table of named values (the programme table, the RAI fields)."""

    items: tuple[tuple[str, str], ...]


Block = Para | Table | Bullets | Fields | Chart


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def document(table: dict[str, Any], charts: dict[str, Chart], report: dict[str, Any],
             rai: dict[str, Any], manifest_sha256: str,
             licenses: tuple[str, ...]) -> tuple[str, list[Section]]:
    """The card's title and sections."""
    src, tr, fr, vol = table["source"], table["time_range"], table["frequency"], table["volume"]
    fmt = table["format"]
    sites = "; ".join(f"{i['name']} ({i['code']}): {_n(i['patients'])} patients, "
                      f"{_n(i['series'])} series" for i in src["institutions"])
    colls = "; ".join(f"{c['name']}: {_n(c['series'])} series"
                      + (f" ({c['description']})" if c["description"] else "")
                      for c in src["collections"])
    period = (f"{tr['start']} to {tr['end']}" if tr["start"] else "no study date")
    if tr["studies_without_date"]:
        period += f"; {tr['studies_without_date']} studies without a date"
    freq = (f"mean {fr['mean_studies_per_month']} studies per month over "
            f"{fr['months_spanned']} months; per year: {_counts(fr['studies_per_year'])}"
            if fr["months_spanned"] else "-")
    variables = ", ".join(f"{v['name']} ({v['completeness']:.0%})"
                          for v in table["main_variables"])
    sop = ", ".join(f"{x['name']} ({_n(x['instances'])})" for x in fmt["sop_classes"])
    items = "; ".join(
        f"{a['label']} ({a['kind']}, {a['annotations']} annotations on {a['items_annotated']} "
        f"items, {a['readers']} reader(s); {_counts(a['statuses'])}"
        + (f"; values {_counts(a['values'])}" if a["values"] else "") + ")"
        for a in table["annotation_items"]) or "none"
    lic = ", ".join(licenses) if licenses else LICENSE_NOT_SET
    programme = Fields((
        ("Name", f"{table['name']}: {table['description']}" if table["description"]
         else table["name"]),
        ("Source", f"{sites}. Collections: {colls}"),
        ("Time range", f"{period} ({tr['note']})"),
        ("Frequency", freq),
        ("Volume", f"{vol['records']}; {vol['size']} ({_n(vol['bytes'])} bytes); "
                   f"{_n(vol['annotations'])} annotations"),
        ("Main variables", f"{variables} (share of series with a value)"),
        ("Format", f"{fmt['images']}: {sop}. {fmt['tables']}. {fmt['metadata']}"),
        ("Annotation items", items),
        ("Licence", lic),
    ))
    order = ("modality", "sex", "age", "labels", "institution", "collection", "study_year",
             "split")
    sections = [
        Section("Programme table", (programme,)),
        Section("Composition", tuple(charts[k] for k in order if k in charts)),
        Section("Variables (series.csv)", (Table(
            ("variable", "type", "completeness", "distinct values", "definition"),
            tuple((v["name"], v["type"], f"{v['completeness']:.0%}",
                   "" if v["distinct"] is None else str(v["distinct"]), v["description"])
                  for v in table["main_variables"])),)),
        Section("Annotation items", (Table(
            ("label", "kind", "concept", "annotations", "items", "readers", "statuses", "values"),
            tuple((a["label"], a["kind"], a["concept"] or "", str(a["annotations"]),
                   str(a["items_annotated"]), str(a["readers"]), _counts(a["statuses"]),
                   _counts(a["values"]) if a["values"] else "")
                  for a in table["annotation_items"])),) if table["annotation_items"]
            else (Para("No annotation is pinned in this release."),)),
        Section("Splits (by patient)", (Table(
            ("split", "patients", "series"),
            tuple((k, str(v["patients"]), str(v["series"]))
                  for k, v in table["splits"].items())),
            Para(f"Cohort: {table['cohort']['expression']}"
                 + (f" (saved cohort {table['cohort']['name']})" if table["cohort"]["name"]
                    else "")
                 + f"; annotation statuses pinned: "
                   f"{', '.join(table['cohort']['annotation_statuses'])}."))),
        Section("De-identification", _deid_blocks(report)),
        Section("Responsible AI (Croissant RAI)", (Fields(tuple(
            (k, "; ".join(v) if isinstance(v, list) else str(v)) for k, v in rai.items())),)),
        Section("Provenance of this card", (Para(
            f"Computed from the release manifest (manifest.json, sha256 {manifest_sha256}) and "
            "the catalog's metadata of its collections and institutions; no number on this "
            "card is typed by hand. Rebuild it with `mida release card "
            f"{table['name']}`."),)),
    ]
    return f"Dataset card: {table['name']}", sections


def _deid_blocks(report: dict[str, Any]) -> tuple[Block, ...]:
    blocks: list[Block] = [Para(f"De-identification took place {report['where']}.")]
    for p in report["profiles"]:
        blocks.append(Para(f"Profile {p['profile']} version {p['profile_version']}, key id "
                           f"{p['key_id']} (the key itself is never part of a release):"))
        blocks.append(Bullets(tuple(p["effects"])))
        if p.get("overrides"):
            blocks.append(Table(("tag", "keyword", "action"),
                                tuple((o["tag"], o["keyword"], o["action"])
                                      for o in p["overrides"])))
    r = report["restrictions"]
    ex = r["excluded"]
    tot = ex.get("total", {})
    blocks.append(Para(f"Release restrictions: {tot.get('series', 0)} of {r['candidates']} "
                       f"candidate series were left out ({r['note']})."))
    if ex.get("by_reason"):
        blocks.append(Table(("reason", "patients", "studies", "series", "instances"),
                            tuple((k, str(v["patients"]), str(v["studies"]), str(v["series"]),
                                   str(v["instances"])) for k, v in ex["by_reason"].items())))
    return tuple(blocks)


# ----------------------------------------------------------------- Markdown

_MD_SPECIAL = {"\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
               "|": "\\|", "#": "\\#", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": " ",
               "\r": " "}


def md_escape(text: str) -> str:
    """Text made inert in Markdown: markup backslashed, HTML characters as entities.

    Examples
    --------
    >>> md_escape("a_b <script>|x")
    'a\\\\_b &lt;script&gt;\\\\|x'
    """
    return "".join(_MD_SPECIAL.get(ch, ch) for ch in text)


def _md_table(headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> list[str]:
    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return out


def markdown(table: dict[str, Any], charts: dict[str, Chart], report: dict[str, Any],
             rai: dict[str, Any], manifest_sha256: str, licenses: tuple[str, ...]) -> str:
    """The datasheet as Markdown (charts as tables with text bars)."""
    title, sections = document(table, charts, report, rai, manifest_sha256, licenses)
    lines = [f"# {md_escape(title)}", ""]
    if table["description"]:
        lines += [md_escape(table["description"]), ""]
    for sec in sections:
        lines += [f"## {md_escape(sec.title)}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                lines.append(md_escape(b.text))
            elif isinstance(b, Bullets):
                lines += [f"- {md_escape(x)}" for x in b.items]
            elif isinstance(b, Fields):
                lines += _md_table(("field", "value"), b.items)
            elif isinstance(b, Table):
                lines += _md_table(b.headers, b.rows)
            else:
                top = max((n for _, n in b.counts), default=0)
                lines += [f"### {md_escape(b.title)}", ""]
                lines += _md_table(("group", b.unit, "bar"), tuple(
                    (k, str(n), "█" * (round(20 * n / top) if top else 0))
                    for k, n in b.counts))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------- HTML

def esc(text: Any) -> str:
    """Text escaped for HTML and SVG (``& < > " '``)."""
    return _html.escape(str(text), quote=True)


def svg_bars(chart: Chart, width: int = 560) -> str:
    """A horizontal bar chart as inline SVG: one row per group, bar length by count."""
    row, label_w, value_w, top = 22, 180, 60, 8
    bar_w = width - label_w - value_w
    biggest = max((n for _, n in chart.counts), default=0)
    height = top * 2 + row * max(len(chart.counts), 1)
    cid = f"chart-{esc(chart.key)}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-labelledby="{cid}-t"><title id="{cid}-t">{esc(chart.title)}</title>']
    if not chart.counts:
        parts.append(f'<text x="0" y="{top + 15}" class="none">none</text>')
    for i, (label, n) in enumerate(chart.counts):
        y = top + i * row
        w = round(bar_w * n / biggest, 1) if biggest else 0
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row - 6}" rx="2">'
                     f'<title>{esc(label)}: {n} {esc(chart.unit)}</title></rect>'
                     f'<text x="{label_w + w + 4}" y="{y + 15}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.field{font-weight:600;white-space:nowrap}
figure{margin:0 0 1rem}figcaption{font-weight:600;margin-bottom:.2rem}
svg.chart text{font-size:12px;fill:#1b1f24}svg.chart rect{fill:#3b6fb6}
.charts{display:flex;flex-wrap:wrap;gap:1rem 2rem}
""".strip()


def _html_table(headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html(table: dict[str, Any], charts: dict[str, Chart], report: dict[str, Any],
         rai: dict[str, Any], manifest_sha256: str, licenses: tuple[str, ...]) -> str:
    """The datasheet as one self-contained HTML page with inline SVG charts."""
    title, sections = document(table, charts, report, rai, manifest_sha256, licenses)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
           'style-src \'unsafe-inline\'">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1>"]
    if table["description"]:
        out.append(f'<p class="description">{esc(table["description"])}</p>')
    for sec in sections:
        out.append(f"<section><h2>{esc(sec.title)}</h2>")
        figures = []
        for b in sec.blocks:
            if isinstance(b, Chart):
                figures.append(f'<figure><figcaption>{esc(b.title)}</figcaption>'
                               f"{svg_bars(b)}</figure>")
                continue
            if isinstance(b, Para):
                out.append(f"<p>{esc(b.text)}</p>")
            elif isinstance(b, Bullets):
                out.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b.items) + "</ul>")
            elif isinstance(b, Fields):
                out.append("<table><tbody>" + "".join(
                    f'<tr><td class="field">{esc(k)}</td><td>{esc(v)}</td></tr>'
                    for k, v in b.items) + "</tbody></table>")
            else:
                out.append(_html_table(b.headers, b.rows))
        if figures:
            out.append('<div class="charts">' + "".join(figures) + "</div>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


__all__ = ["Section", "document", "esc", "html", "markdown", "md_escape", "svg_bars"]
