"""Reports: a study's executed notebooks as one self-contained HTML file, fit to share.

``export_study("demo")`` writes ``reports/demo/report.html``: a title block (study,
date, a summary of what each notebook found, from the metrics it recorded, and the
runs' provenance), then each notebook's latest completed run in notebook order, code
cells hidden. Self-contained means a reader offline sees everything: no script, style
sheet or font is fetched from the web. nbconvert's ``lab``/``classic`` templates load
require.js and MathJax from a CDN, so the body is rendered with the ``basic`` template
inside the lab's own small style sheet, and Altair charts (vega-lite outputs, which
need vega's JavaScript) become inline SVG images rendered with ``vl-convert``, with
alt text saying what they show.

Fit to share (:func:`shareable`): progress-bar widgets (which render as script stubs
that fail without Jupyter) and their saved state are dropped, so are Python warnings
and progress lines on stderr; tables lose pandas' row-number column and show large
numbers in engineering notation (``1.9e13``); absolute paths of the run store, the
checkout and the home folder are written relative to them. Host and user names are
kept in each run's provenance, not in the report.
"""

from __future__ import annotations

import base64
import copy
import html
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from . import paths
from .flops import readable
from .plots import describe
from .record import RunStore, atomic_write, check_name

log = logging.getLogger("robustlib.report")

_VEGALITE = re.compile(r"^application/vnd\.vegalite\.v(\d+)(\.\d+)?(\+json|\.json)$")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
section.notebook { border-top: 1px solid #ccc; margin-top: 2.5em; padding-top: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: .6em; white-space: pre-wrap; font-size: 0.85em; }
.anchor-link { display: none; }
.meta { color: #555; font-size: 0.9em; } .jp-RenderedSVG svg, img { max-width: 100%; height: auto; }
.jp-OutputPrompt, .jp-InputPrompt, .prompt { display: none; }
"""


def _vegalite_to_svg(spec: dict, major: str) -> str:
    import vl_convert

    versions = [v for v in vl_convert.get_vegalite_versions() if v.startswith(f"{major}.")]
    return vl_convert.vegalite_to_svg(spec, vl_version=versions[-1] if versions else None)


_WIDGET = "application/vnd.jupyter.widget-view+json"
# A Python warning as printed: "path:line: SomeWarning: message" and the source line under it.
_WARNING = re.compile(r"^.*:\d+: \w*Warning: .*\n(?:[ \t]+\S.*\n)?", re.M)


def _svg_image(svg: str, alt: str) -> str:
    encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{encoded}" alt="{html.escape(alt)}">'


def _clean_stderr(text: str) -> str:
    text = _WARNING.sub("", text)
    return "".join(line for line in text.splitlines(True) if "\r" not in line and "it/s]" not in line
                   and "s/it]" not in line)


def static_charts(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose charts (vega-lite or SVG outputs) are inline SVG images
    with alt text (:func:`robustlib.plots.describe`, or what the notebook's renderer
    recorded); nothing else of those outputs is kept."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            key = next((k for k in data if _VEGALITE.match(k)), None)
            if key is None:
                continue
            svg = _vegalite_to_svg(data[key], _VEGALITE.match(key).group(1))
            out["data"] = {"text/html": _svg_image(svg, describe(data[key]))}
            out["metadata"] = {}
        for out in cell.get("outputs", []):  # SVG the notebook rendered itself: the alt text it recorded
            svg = out.get("data", {}).get("image/svg+xml")
            if svg is not None:
                alt = (out.get("metadata", {}).get("image/svg+xml") or {}).get("alt") or "Chart"
                out["data"] = {"text/html": _svg_image(svg if isinstance(svg, str) else "".join(svg), alt)}
                out["metadata"] = {}
    return nb


def shareable(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` fit to share (see the module docstring): charts as images with
    alt text, no widgets or their state, no warnings or progress lines on stderr."""
    nb = static_charts(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if _WIDGET in out.get("data", {}):
                continue  # a progress bar: a script stub offline, and stale anyway
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["text"] = _clean_stderr(out.get("text", ""))
                if not out["text"].strip():
                    continue
            kept.append(out)
        cell["outputs"] = kept
    return nb


def tidy_tables(body: str) -> str:
    """pandas tables without their row numbers (an unnamed integer index), numbers of
    1e6 or more (or under 1e-3) in engineering notation, and long decimals cut to 3
    places (``0.909091`` -> ``0.909``)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(body, features="html.parser")
    big = re.compile(r"^-?(?:\d{7,}(?:\.\d*)?|\d+(?:\.\d+)?e[+-]?\d+|0\.000\d+)$", re.I)
    long = re.compile(r"^-?\d+\.\d{4,}$")
    for table in soup.select("table.dataframe"):
        rows = table.select("tbody tr")
        firsts = [r.find(["th", "td"]) for r in rows]
        heads = [h.find(["th", "td"]) for h in table.select("thead tr")]
        unnamed = all(h is not None and not h.get_text(strip=True) for h in heads)
        if rows and unnamed and all(f is not None and f.name == "th" and f.get_text(strip=True).isdigit()
                                    for f in firsts):
            for cell in [*firsts, *heads]:
                cell.decompose()
        for td in table.select("td"):
            text = td.get_text(strip=True)
            if big.match(text) and float(text) != 0:
                td.string = readable(float(text))
            elif long.match(text):
                td.string = f"{float(text):.3f}".rstrip("0").rstrip(".")
    return str(soup)


def relative_paths(text: str) -> str:
    """Absolute paths of the run store, the reports, the checkout and the home folder
    written relative to them (``runs/...``, ``~/...``)."""
    places = [(paths.runs_dir(), "runs"), (paths.reports_dir(), "reports")]
    root = paths.project_root()
    if root is not None:
        places.append((root, "."))
    places.append((Path.home(), "~"))
    for folder, name in sorted(places, key=lambda p: -len(str(p[0]))):
        text = text.replace(str(folder), name)
    return text


def notebook_body(nb: nbformat.NotebookNode) -> str:
    """The notebook's markdown and outputs as HTML, inputs hidden, no external refs."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(shareable(nb))
    # The basic template loads nothing from the web; drop anything that would.
    body = re.sub(r"<script\b[^>]*\bsrc=[\"']https?:[^>]*>\s*</script>", "", body, flags=re.I)
    return relative_paths(tidy_tables(body))


def external_references(text: str) -> list[str]:
    """``src``/``href`` attributes of scripts, styles and images that point to the web."""
    pattern = r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](https?:[^\"']+)"
    return re.findall(pattern, text, flags=re.I)


def export_study(study: str, out: str | Path | None = None) -> Path:
    """Write one self-contained HTML report of ``study``'s latest completed runs."""
    check_name("study", study)
    store = RunStore()
    runs = [r for r in store.runs(study) if r.completed and (r.path / "notebook.ipynb").exists()]
    if not runs:
        raise LookupError(f"study {study!r} has no completed notebook runs in {store.root}; "
                          f"studies there: {store.studies()}")
    latest = {}
    for run in sorted(runs, key=lambda r: r.status.get("completed", "")):
        latest[run.notebook or run.name] = run  # later completions win
    intro = ("Each section is a notebook's latest completed run in this study (code hidden; parameters, "
             "checkpoints and metrics are in the run folders).")
    return write_report(study, [("", [latest[k] for k in sorted(latest)])], intro, out=out)


def export_sweep(sweep, out: str | Path | None = None) -> Path:
    """Write the report of a completed sweep (:class:`robustlib.sweep.Sweep`): the grid
    (its cells, and jobs per stage with their compute time), then per cell its merged
    runs and analyses, then the notebooks run once."""
    sf = sweep.study_file
    groups = []
    for cell in sf.cells:
        keys = [j.key for j in sweep.jobs if j.cell == cell and j.kind in ("merge", "cell")]
        runs = [sweep.run_of(k) for k in keys]
        heading = "" if len(sf.cells) == 1 else f"{cell.task} · {cell.family}"
        groups.append((heading, [r for r in runs if r is not None and r.completed]))
    singles = [sweep.run_of(j.key) for j in sweep.jobs if j.kind == "single"]
    singles = [r for r in singles if r is not None and r.completed]
    if singles:
        groups.append(("" if len(sf.cells) <= 1 else "Once per study", singles))
    rows = []
    for nb in dict.fromkeys(j.notebook for j in sweep.jobs):
        jobs = [j for j in sweep.jobs if j.notebook == nb]
        seconds = sum(_run_seconds(sweep.run_of(j.key)) for j in jobs)
        per = sorted({j.kind for j in jobs})
        rows.append(f"<tr><td>{html.escape(nb)}</td><td>{len(jobs)}</td><td>{html.escape(', '.join(per))}</td>"
                    f"<td>{seconds / 60:.1f}</td></tr>")
    cells = "".join(
        f"<tr><td>{html.escape(c.task)}</td><td>{html.escape(c.family)}</td><td>{html.escape(', '.join(c.sizes))}</td>"
        f"<td>{html.escape(', '.join(map(str, c.seeds)))}"
        + (f" ({html.escape(', '.join(f'{s}: {list(v)}' for s, v in c.seeds_by_size))})" if c.seeds_by_size else "")
        + f"</td><td>{len(c.models)}</td></tr>" for c in sf.cells)
    intro = (f"A sweep of {len(sweep.jobs)} notebook runs over {max(len(sf.cells), 1)} cell(s) (task x family). "
             "Every model was fine-tuned, attacked and defended in its own run; each cell's section shows the "
             "runs that gather them (all sizes and seeds), then its analyses.")
    grid = ("<h2>The grid</h2>"
            + (f"<table><tr><th>task</th><th>family</th><th>sizes</th><th>seeds</th><th>models</th></tr>{cells}"
               "</table>" if cells else "")
            + "<table><tr><th>stage</th><th>jobs</th><th>kind</th><th>run time (min, summed)</th></tr>"
            + "".join(rows) + "</table>")
    return write_report(sf.study, groups, intro, extra=grid, out=out)


def _run_seconds(run) -> float:
    if run is None:
        return 0.0
    status = run.status
    try:
        start = datetime.fromisoformat(status["started"])
        end = datetime.fromisoformat(status["completed"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return max(0.0, (end - start).total_seconds())


def write_report(study: str, groups: list[tuple[str, list]], intro: str, extra: str = "",
                 out: str | Path | None = None) -> Path:
    """Write the HTML report of ``groups`` (``[(heading, runs)]``, a heading of "" for
    none) to ``out`` (default ``reports/<study>/report.html``)."""
    from .studies import summarize

    rows, findings, sections = [], [], []
    for heading, runs in groups:
        if heading:
            sections.append(f"<h2 class=\"group\">{html.escape(heading)}</h2>")
        for run in runs:
            anchor = html.escape(f"{heading}-{run.notebook or run.name}" if heading else (run.notebook or run.name))
            label = html.escape(f"{heading}: {run.notebook}" if heading else (run.notebook or run.name))
            prov = run.provenance
            commit = (prov.get("git_commit") or "?")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
            rows.append(
                f"<tr><td>{label}</td><td>{html.escape(run.name)}</td>"
                f"<td>{html.escape(run.status.get('completed', ''))}</td><td>{html.escape(commit)}</td>"
                f"<td>{html.escape(str(prov.get('machine', '')))} · {prov.get('cpu_count', '?')} CPUs · "
                f"torch {html.escape(str((prov.get('packages') or {}).get('torch')))}</td></tr>"
            )
            said = summarize(run.notebook or "", run.metrics)
            if said:
                findings.append(f'<li><a href="#{anchor}">{label}</a>: {html.escape(said)}</li>')
            sections.append(f'<section class="notebook" id="{anchor}">'
                            f"{notebook_body(nbformat.read(run.path / 'notebook.ipynb', as_version=4))}</section>")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>robustlib lab · {html.escape(study)}</title>
<style>{CSS}</style></head>
<body>
<h1>robustlib lab report: {html.escape(study)}</h1>
<p class="meta">Generated {date}. {html.escape(intro)}</p>
{('<h2>Findings</h2><ul class="findings">' + ''.join(findings) + '</ul>') if findings else ''}
{extra}
<table><tr><th>notebook</th><th>run</th><th>completed</th><th>git commit</th><th>machine</th></tr>
{''.join(rows)}</table>
{''.join(sections)}
</body></html>
"""
    refs = external_references(page)
    if refs:  # never ship a report that needs the network
        raise RuntimeError(f"report would load from the web: {refs[:3]}")
    target = Path(out) if out else paths.reports_dir() / study / "report.html"
    atomic_write(target, page)
    log.info("report written to %s", target)
    return target


def export_chart(chart, path: str | Path) -> Path:
    """Save an Altair chart as ``.svg``, ``.png`` or self-contained ``.html``."""
    path = Path(path)
    accepted = (".svg", ".png", ".html")
    if path.suffix not in accepted:
        raise ValueError(f"cannot export a chart to {path.name!r}; accepted suffixes: {list(accepted)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        chart.save(str(path), inline=True)  # vega's JavaScript embedded, nothing fetched
    else:
        chart.save(str(path))
    return path
