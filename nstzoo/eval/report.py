"""One self-contained HTML page for a run folder, an ablation output folder or a compare output folder.

The page opens from disk with no server and no network: every picture is a ``data:`` URI — image
thumbnails as JPEG (:func:`nstzoo.search.html.thumbnail_data_uri`), plots as SVG drawn by matplotlib
(no pyplot: a ``Figure`` per plot, so nothing global is touched). Markup lives in
``templates/report.html``, rendered by jinja2 with autoescaping, so a run or file name cannot break
the page. Sections (``<section id=...>``):

- ``summary``: what the folder is, and notes;
- ``tables``: the ablation table (Table 1) or Table 2 / Table 3, or a run's metrics on ``--testset``;
- ``results``: style mAP per test set as a bar chart;
- ``training``: loss, learning rate and images/s from each run's ``metrics.jsonl``;
- ``stylizations``: contents x styles for each method of each test set;
- ``retrieval``: per encoder and method, queries with their top-k (correct style marked);
- ``config``: each run's resolved ``config.yaml``.

Retrieval grids come from the samples that ``nstzoo ablate`` / ``nstzoo compare`` stored with their
metrics, so a report never embeds a test set again; for a run folder they are computed on the
``--testset`` folders given.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DataError
from .compare import COMPARE_JSON, Table

__all__ = ["ReportData", "collect", "render_report", "write_report", "REPORT_NAME", "GENERATOR"]

REPORT_NAME = "report.html"
GENERATOR = "nstzoo report"


@dataclass
class ReportData:
    """What a report shows, gathered from a folder (see :func:`collect`)."""

    kind: str
    source: Path
    title: str
    tables: list[Table] = field(default_factory=list)
    testsets: list[Path] = field(default_factory=list)
    retrieval: list[dict[str, Any]] = field(default_factory=list)
    """``{"encoder", "method", "testset", "queries": [...]}`` (queries as :func:`retrieval_samples` gives them)."""
    runs: list[tuple[str, Path]] = field(default_factory=list)
    bars: dict[str, Any] | None = None
    """``{"title", "groups": [column labels], "series": {row label: [value per group]}}``."""
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- collecting
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})", hint="rerun the command that wrote it") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _run_of(path: str | None) -> Path | None:
    """The run folder an encoder entry comes from (a run folder, or a file inside one), if any."""
    if not path:
        return None
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return folder if (folder / "metrics.jsonl").is_file() else None


def _collect_ablation(folder: Path, doc: Mapping[str, Any]) -> ReportData:
    from .ablate import ablation_table

    table = ablation_table(doc)
    data = ReportData("ablation", folder, f"Ablation ({doc['profile']['name']} profile): {folder.name}",
                      tables=[table], testsets=[Path(t["path"]) for t in doc["testsets"]])
    if doc["profile"].get("description"):
        data.notes.append(doc["profile"]["description"])
    for exp in doc["experiments"]:
        data.runs.append((exp["name"], Path(exp["run_dir"])))
        for method, block in (exp.get("samples") or {}).items():
            data.retrieval.append({"encoder": exp["name"], "method": method, "testset": block["testset"],
                                   "queries": block["queries"]})
    groups = [c for c in doc["columns"]]
    data.bars = {"title": "style mAP (%) per test set", "groups": [c["label"] for c in groups],
                 "series": {e["name"]: [((e["table"].get(c["key"]) or {}).get("style mAP")) for c in groups]
                            for e in doc["experiments"]}}
    data.notes.append(f"{len(doc['experiments'])} experiments, {len(doc['testsets'])} test sets; "
                      f"{doc.get('seconds', '?')} s for the last invocation.")
    return data


def _collect_compare(folder: Path, doc: Mapping[str, Any]) -> ReportData:
    from .compare import compare_tables

    data = ReportData("compare", folder, f"Encoder comparison: {folder.name}", tables=compare_tables(doc),
                      testsets=[Path(t["path"]) for t in doc["testsets"]])
    for entry in doc["encoders"]:
        run = _run_of(entry.get("path"))
        if run is not None:
            data.runs.append((entry["label"], run))
        for method, block in (doc.get("samples", {}).get(entry["label"]) or {}).items():
            data.retrieval.append({"encoder": entry["label"], "method": method, "testset": block["testset"],
                                   "queries": block["queries"]})
    methods = list(doc["methods"])
    data.bars = {"title": "style mAP (%) per test set", "groups": methods + ["average"],
                 "series": {label: [r["methods"].get(m, {}).get("style", {}).get("mAP") for m in methods]
                            + [r["mean"]["style"].get("mAP")] for label, r in doc["results"].items()}}
    data.notes.append("Encoders: " + "; ".join(
        f"{e['label']} = {e['kind']} {e.get('path') or e.get('name') or e['text']}"
        + (f" {json.dumps(e['options'])}" if e.get("options") else "")
        + (f" (step {e['step']})" if e.get("step") is not None else "") for e in doc["encoders"]))
    return data


def _collect_run(folder: Path, testsets: Sequence[Path], device: Any, log: Callable[[str], None]) -> ReportData:
    from .compare import evaluate_model, load_entry, EncoderEntry

    data = ReportData("run", folder, f"Training run: {folder.name}", runs=[(folder.name, folder)],
                      testsets=list(testsets))
    records = _metrics(folder)
    if records:
        last = records[-1]
        data.tables.append(Table("Training", ["steps", "final loss", "final lr", "median images/s"],
                                 [[last.get("step"), _num(last.get("loss")), _num(last.get("lr")),
                                   _num(_median([r.get("images_per_s") for r in records]))]]))
    if not testsets:
        data.notes.append("No test set given (--testset DIR): no metrics, stylization or retrieval grids.")
        return data
    model, meta = load_entry(EncoderEntry(folder.name, str(folder), "run", str(folder)), device)
    data.notes.append(f"Encoder {meta.get('name')} at step {meta.get('step')}.")
    for testset in testsets:
        log(f"evaluating {folder} on {testset}")
        result = evaluate_model(model, testset, device=device)
        rows = [[m] + [r[g][k] for g, k in (("style", "mAP"), ("style", "IR-1"), ("content", "mAP"),
                                             ("content", "IR-1"))]
                for m, r in [*result["methods"].items(), ("mean", result["mean"])]]
        data.tables.append(Table(f"Retrieval on {testset}", ["method", "style mAP", "style IR-1", "content mAP",
                                                             "content IR-1"], rows))
        for method, queries in result["samples"].items():
            data.retrieval.append({"encoder": folder.name, "method": method, "testset": str(testset),
                                   "queries": queries})
    return data


def collect(folder: str | Path, *, testsets: Sequence[str | Path] = (), device: Any = "cpu",
            log: Callable[[str], None] = print) -> ReportData:
    """Read what a report shows from an ablation, compare or run folder.

    Raises:
        DataError: the folder is none of those.
    """
    from .ablate import ABLATION_JSON

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder", hint="give a run folder, an ablation or a compare output folder")
    if (folder / ABLATION_JSON).is_file():
        data = _collect_ablation(folder, _read_json(folder / ABLATION_JSON))
    elif (folder / COMPARE_JSON).is_file():
        data = _collect_compare(folder, _read_json(folder / COMPARE_JSON))
        summary = folder / "summary.json"
        if summary.is_file():  # nstzoo quickstart's folder: a comparison plus what the run was
            facts = _read_json(summary)
            data.title = f"ALADIN-NST quickstart: {folder.name}"
            data.notes.insert(0, f"Stylizers {', '.join(facts.get('stylizers', []))}; {facts.get('steps')} steps of "
                                 f"{facts.get('batch_size')} stylized images; VGG branch {facts.get('vgg')}; "
                                 f"{facts.get('seconds')} s in all.")
    elif (folder / "config.yaml").is_file() and ((folder / "metrics.jsonl").is_file()
                                                  or (folder / "checkpoints" / "last.pt").is_file()):
        return _collect_run(folder, [Path(t) for t in testsets], device, log)
    else:
        raise DataError(f"{folder} is not a run folder (config.yaml + metrics.jsonl), an ablation output folder "
                        f"({ABLATION_JSON}) or a compare output folder ({COMPARE_JSON})",
                        hint="nstzoo train / ablate / compare --out DIR write one")
    data.testsets += [Path(t) for t in testsets if Path(t) not in data.testsets]
    return data


# ----------------------------------------------------------------------------- numbers
def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _median(values: Sequence[Any]) -> float | None:
    clean = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    return clean[len(clean) // 2] if clean else None


def _metrics(run: Path) -> list[dict[str, Any]]:
    from ..runs import RunFolder

    return [r for r in RunFolder(run, kind="?").records() if isinstance(r.get("step"), int)]


# ----------------------------------------------------------------------------- plots
def _svg_uri(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode("utf-8")).decode("ascii")


def training_plot(runs: Sequence[tuple[str, Path]]) -> str | None:
    """Loss, learning rate and images/s against step, one line per run, as an SVG data URI (None: no records)."""
    from matplotlib.figure import Figure

    series = [(label, _metrics(path)) for label, path in runs]
    series = [(label, records) for label, records in series if records]
    if not series:
        return None
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    from matplotlib.ticker import FormatStrFormatter

    for (key, title), ax in zip((("loss", "loss"), ("lr", "learning rate"), ("images_per_s", "images / s")), axes):
        values = []
        for label, records in series:
            points = [(r["step"], r[key]) for r in records if _num(r.get(key)) is not None]
            if points:
                ax.plot(*zip(*points), label=label, linewidth=1.2, marker="." if len(points) < 30 else None)
                values += [v for _, v in points]
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "lr" and values:
            # The paper's decay (x0.999875 per 100 steps) is invisible over a short run: a log axis only
            # when the rate spans a decade, else a linear one from 0, so a flat rate looks flat.
            if min(values) > 0 and max(values) / min(values) > 10:
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, max(values) * 1.15)
                ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    axes[0].legend(fontsize=7, ncol=1 if len(series) < 5 else 2)
    fig.tight_layout()
    return _svg_uri(fig)


def results_plot(bars: Mapping[str, Any]) -> str | None:
    """Grouped bars: one group per column (test set), one bar per row (experiment or encoder)."""
    from matplotlib.figure import Figure

    groups, series = list(bars["groups"]), dict(bars["series"])
    if not groups or not series:
        return None
    fig = Figure(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(series)) ** 0.5), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [v if _num(v) is not None else 0.0 for v in values], width=width, label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel("%")
    ax.set_title(bars["title"])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(series)), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _svg_uri(fig)


# ----------------------------------------------------------------------------- pictures
@lru_cache(maxsize=4096)
def _thumb(path: str, size: int) -> str | None:
    from ..search.html import thumbnail_data_uri

    return thumbnail_data_uri(path, size)


def _picture(path: Path, size: int, caption: str = "") -> dict[str, Any]:
    return {"src": _thumb(str(path), size), "name": path.name, "path": str(path), "caption": caption}


def _spread(items: Sequence[str], count: int) -> list[str]:
    """``count`` items spread evenly over ``items`` (first and last included), in order."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1) if count > 1 else 0
    return [items[round(i * step)] for i in range(count)]


def stylization_grids(testsets: Sequence[Path], thumb: int, max_styles: int, max_contents: int,
                      notes: list[str]) -> list[dict[str, Any]]:
    """One grid per method of each test set: header row = styles, first column = contents."""
    from .manifest import read_manifest

    grids = []
    for testset in testsets:
        try:
            rows = read_manifest(testset)
        except DataError as exc:
            notes.append(f"Stylization grid of {testset} left out: {exc.message}")
            continue
        by_key = {(r.method, r.style_id, r.content_id): r.path for r in rows if r.role == "stylized"}
        sources = {(r.role, r.style_id or r.content_id): r.path for r in rows if r.role != "stylized"}
        for method in sorted({r.method for r in rows if r.role == "stylized"}):
            styles = _spread(sorted({s for m, s, _ in by_key if m == method}), max_styles)
            contents = _spread(sorted({c for m, _, c in by_key if m == method}), max_contents)
            grids.append({
                "method": method, "testset": str(testset),
                "styles": [_picture(testset / sources[("style", s)], thumb, s) for s in styles],
                "rows": [{"content": _picture(testset / sources[("content", c)], thumb, c),
                          "cells": [_picture(testset / by_key[(method, s, c)], thumb, f"{s} × {c}")
                                    if (method, s, c) in by_key else None for s in styles]}
                         for c in contents],
            })
    return grids


def retrieval_grids(blocks: Sequence[Mapping[str, Any]], thumb: int, queries: int) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        root = Path(block["testset"])
        shown = []
        for q in block["queries"][:queries]:
            hits = [{**_picture(root / h["path"], thumb, f"#{i + 1} · {h['score']:.3f}"), "correct": h["correct"],
                     "role": h["role"], "style_id": h["style_id"]} for i, h in enumerate(q["hits"])]
            shown.append({"query": _picture(root / q["path"], thumb, f"{q['style_id']} × {q['content_id']}"),
                          "source_rank": q.get("source_rank"), "hits": hits,
                          "correct": sum(h["correct"] for h in hits)})
        out.append({"encoder": block["encoder"], "method": block["method"], "queries": shown})
    return out


# ----------------------------------------------------------------------------- page
def _table_view(table: Table) -> dict[str, Any]:
    """A table with a two-level header: groups (test sets) spanning their metric columns."""
    split = table.split_columns()
    top: list[dict[str, Any]] = []
    for group, metric in split:
        if metric and top and top[-1]["label"] == group and top[-1]["grouped"]:
            top[-1]["span"] += 1
        else:
            top.append({"label": group, "span": 1, "grouped": bool(metric)})
    two_levels = any(cell["grouped"] for cell in top)
    return {"title": table.title, "note": table.note, "top": top, "two_levels": two_levels,
            "metrics": [metric for _, metric in split if metric], "numeric": table.numeric(),
            "rows": table.formatted()}


def render_report(data: ReportData, *, thumb: int = 96, queries: int = 2, max_styles: int = 5,
                  max_contents: int = 4) -> str:
    """The HTML page for ``data`` (a string; see :func:`write_report`)."""
    import jinja2

    from .. import __version__

    notes = list(data.notes)
    configs = []
    for label, run in data.runs:
        config = run / "config.yaml"
        if config.is_file():
            configs.append({"label": label, "path": str(config), "text": config.read_text(encoding="utf-8")})
    env = jinja2.Environment(loader=jinja2.PackageLoader("nstzoo.eval", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html").render(
        data=data, version=__version__, generator=GENERATOR, thumb=thumb,
        tables=[_table_view(t) for t in data.tables],
        results_plot=results_plot(data.bars) if data.bars else None,
        training_plot=training_plot(data.runs),
        grids=stylization_grids(data.testsets, thumb, max_styles, max_contents, notes),
        retrieval=retrieval_grids(data.retrieval, thumb, queries),
        configs=configs, notes=notes)


def is_report(path: Path) -> bool:
    """True when ``path`` is a page this module wrote (so it may be replaced without --overwrite)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(600)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}' in head


def write_report(data: ReportData, out: str | Path, **options: Any) -> Path:
    """Render ``data`` to ``out`` atomically; returns the path."""
    from ..files import atomic_write
    from ..outputs import write_error

    page = render_report(data, **options)
    try:
        return atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    except OSError as err:
        raise write_error(out, err) from None
