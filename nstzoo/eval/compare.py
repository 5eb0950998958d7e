"""Several encoders on the same test sets: the paper's Table 2 (style) and Table 3 (content).

An encoder *entry* is one of

- an exported ``.safetensors`` file (``nstzoo export``, ``nstzoo encoders export``);
- a run folder (its ``encoder.safetensors``, or its last checkpoint while it trains);
- a registered encoder built with options, e.g. a training-free floor:
  ``color-hist``, ``vgg-gram(stat=mean-std,vgg=vgg16-hed)``, ``aladin-vit(weights=aladinVIT.pt)``.
  Option values are read as YAML (``taps=[relu1_1,relu2_1]``); nested options (``fused``) go
  through ``nstzoo encoders export --options-json`` and the exported file.

Any entry may carry a label, ``ours=runs/paper``. Every encoder embeds every test set once; the
metrics are :func:`nstzoo.eval.metrics.evaluate`'s, and a few queries per method keep their top-k
neighbours (``samples``) so that ``nstzoo report`` can draw retrieval grids without embedding again.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, NstzooError
from .manifest import ManifestRow, read_manifest

__all__ = ["EncoderEntry", "Table", "parse_encoder_entries", "build_registered", "load_entry", "evaluate_model",
           "retrieval_samples", "mean_metrics", "export_registered", "testset_methods", "evaluate_entry",
           "compare_document", "compare_encoders", "compare_tables", "write_compare",
           "COMPARE_JSON", "COMPARE_MD", "COMPARE_KIND"]

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_KIND = "nstzoo-compare"

_NAME = re.compile(r"^(?P<name>[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*)(?:\((?P<options>.*)\))?$", re.S)
_LABEL = re.compile(r"^(?P<label>[A-Za-z0-9_.+-]+)=(?P<body>.+)$", re.S)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Column-name endings that name a metric (longest first): the rest of the name is the column's group.
METRIC_SUFFIXES = ("style mAP", "style IR-1", "content mAP", "content IR-1", "mAP", "IR-1")


# ----------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A results table: a header and rows of labels (str) and numbers (float, NaN or None = no value).

    The one shape behind the Markdown, CSV, terminal and HTML forms of every table here.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    @staticmethod
    def cell(value: Any, digits: int = 2) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    def formatted(self) -> list[list[str]]:
        return [[self.cell(v) for v in row] for row in self.rows]

    def split_columns(self) -> list[tuple[str, str]]:
        """``(group, metric)`` per column: ``"neat (ghiasi) style mAP"`` -> ``("neat (ghiasi)", "style mAP")``;
        a column with no metric suffix (a label) -> ``(column, "")``. Two-level headers are built from it."""
        out = []
        for column in self.columns:
            metric = next((m for m in METRIC_SUFFIXES if column.endswith(" " + m)), "")
            out.append((column[: -len(metric) - 1], metric) if metric else (column, ""))
        return out

    def numeric(self) -> list[bool]:
        """Which columns hold numbers (right-aligned) rather than labels."""
        return [any(isinstance(row[i], float) for row in self.rows) for i in range(len(self.columns))]

    def markdown(self) -> str:
        # A '|' inside a label would split the cell: escape it.
        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [f"### {self.title}", ""] + ([self.note, ""] if self.note else [])
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.formatted()]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Full precision (4 decimals), empty cells where there is no value."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else
                             (f"{v:.4f}" if isinstance(v, float) else v) for v in row])
        return buffer.getvalue()

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note, "columns": list(self.columns),
                "rows": [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in self.rows]}


# ----------------------------------------------------------------------------- entries
@dataclass
class EncoderEntry:
    """One encoder to evaluate, as the user named it."""

    label: str
    text: str
    kind: str  # "file" | "run" | "registered"
    path: str | None = None
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "text": self.text, "kind": self.kind, "path": self.path, "name": self.name,
                "options": dict(self.options)}


def split_top_level(text: str, where: str) -> list[str]:
    """``"a,b(c=1,d=[2,3]),e"`` -> ``["a", "b(c=1,d=[2,3])", "e"]``: commas inside brackets do not split."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{where} {text!r}: unbalanced {ch!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise ConfigError(f"{where} {text!r}: an opening bracket is never closed")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_options(text: str, where: str) -> dict[str, Any]:
    """``"stat=mean-std,size=128"`` -> ``{"stat": "mean-std", "size": 128}`` (values read as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in split_top_level(text, where):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(f"{where}: option {item!r} is not KEY=VALUE", hint="e.g. vgg-gram(stat=mean-std,size=128)")
        try:
            options[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: the value of option {key!r} is not valid YAML ({exc})") from exc
    return options


def _default_label(kind: str, path: Path | None, text: str) -> str:
    if kind == "run":
        return path.resolve().name
    if kind == "file":
        # ``run/encoder.safetensors`` says less than ``run``
        return path.resolve().parent.name if path.stem == "encoder" else path.stem
    return text


def parse_encoder_entries(items: Iterable[str], option: str = "--encoders") -> list[EncoderEntry]:
    """Entries from comma lists (``a.safetensors,runs/b,color-hist``); labels made unique.

    A path that exists wins over every other reading, so a file named ``a=b`` is still a file.

    Raises:
        ConfigError: a name that is no file, no folder and no registered encoder (with the closest
            registered name), or bad options.
        DataError: an entry that is neither an existing path nor shaped like ``NAME(KEY=VALUE,...)``.
    """
    from ..registry import get_registry

    entries: list[EncoderEntry] = []
    for chunk in items:
        for text in split_top_level(chunk, option):
            label, body = None, text
            match = _LABEL.match(text)
            # A label is letters, digits and ._+- before the first '=' (so not an option's '=' or a path's).
            if match and not Path(text).expanduser().exists():
                label, body = match.group("label"), match.group("body").strip()
            path = Path(body).expanduser()
            if path.is_file():
                entry = EncoderEntry(label or _default_label("file", path, body), text, "file", str(path))
            elif path.is_dir():
                entry = EncoderEntry(label or _default_label("run", path, body), text, "run", str(path))
            else:
                named = _NAME.match(body)
                if named is None:
                    raise DataError(f"{option} entry {body!r}: no such file or folder, and not an encoder name",
                                    hint="give an exported .safetensors file, a run folder, or NAME(KEY=VALUE,...)")
                name = named.group("name")
                try:
                    get_registry().encoder(name)
                except NstzooError as exc:
                    looks_like_path = "/" in body or body.endswith(".safetensors")
                    what = "no such file or folder" if looks_like_path else "no such file, folder or registered encoder"
                    raise ConfigError(f"{option} entry {body!r}: {what} ({exc.message})", hint=exc.hint) from None
                options = parse_options(named.group("options") or "", f"{option} entry {body!r}")
                entry = EncoderEntry(label or body, text, "registered", None, name, options)
            entries.append(entry)
    if not entries:
        raise ConfigError(f"{option}: no encoders given", hint="e.g. --encoders runs/a,color-hist")
    seen: dict[str, int] = {}
    for entry in entries:  # two runs both called "run": "run", "run#2"
        count = seen.get(entry.label, 0) + 1
        seen[entry.label] = count
        if count > 1:
            entry.label = f"{entry.label}#{count}"
    return entries


def build_registered(name: str, options: Mapping[str, Any]) -> Any:
    """Registered encoder ``name`` built by its factory with ``options`` (eval mode)."""
    from ..registry import get_registry

    return get_registry().build_encoder(name, options).eval()


def export_registered(name: str, options: Mapping[str, Any], path: str | Path, *, check: bool = True) -> Path:
    """Build registered encoder ``name`` with ``options`` and save it as an nstzoo encoder file.

    The header holds ``{"encoder": name, "options": model.export_config()}``, so
    :func:`nstzoo.load_encoder` (and ``nstzoo eval / embed / compare``) rebuild it without the weight
    files it was built from. ``check`` reloads the file and compares embeddings of two small
    random images, so an encoder whose ``export_config()`` does not rebuild it is caught here.

    Raises:
        WeightsError: the reloaded encoder embeds differently (its export_config is incomplete).
    """
    import torch

    from ..errors import WeightsError
    from ..weights import load_encoder, save_safetensors

    model = build_registered(name, options)
    written = save_safetensors(path, model.state_dict(), kind="encoder", name=name,
                               config={"encoder": name, "options": model.export_config()})
    if check:
        side = max(model.input_sizes) if model.input_sizes else 64
        images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            before, after = model(images), load_encoder(written)(images)
        if before.shape != after.shape or not torch.allclose(before, after, atol=1e-4):
            written.unlink(missing_ok=True)
            raise WeightsError(f"encoder {name!r}: the exported file does not rebuild the same model "
                               "(its export_config() misses an option); nothing was kept",
                               hint="report this to the encoder plugin's author")
    return written


def load_entry(entry: EncoderEntry, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode on device, {"name", "step"})`` for one entry."""
    from .embed import resolve_encoder

    if entry.kind == "registered":
        return build_registered(entry.name, entry.options).to(device), {"name": entry.name, "step": None}
    model, meta = resolve_encoder(entry.path, device=device)
    config = meta.get("config")
    step = config.get("step") if isinstance(config, dict) else meta.get("step")
    return model.eval(), {"name": meta.get("name"), "step": step}


# ----------------------------------------------------------------------------- evaluation
def _square_side(path: Path) -> int:
    from ..data.folder import load_image

    return int(max(load_image(path).shape[1:]))


def retrieval_samples(embeddings: np.ndarray, rows: Sequence[ManifestRow], n_queries: int = 4,
                      k: int = 6) -> dict[str, list[dict[str, Any]]]:
    """A few style queries per method with their top-``k`` neighbours, for retrieval grids.

    Queries are stylized images of styles spread evenly over the method's styles (different contents);
    the corpus is the method's other stylized images and the source style images. A hit is
    ``correct`` when it shares the query's style. ``source_rank`` is where the query's source style
    image lands (1-based).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    style_rows = [i for i, r in enumerate(rows) if r.role == "style"]
    out: dict[str, list[dict[str, Any]]] = {}
    for method in sorted({r.method for r in rows if r.role == "stylized"}):
        idx = [i for i, r in enumerate(rows) if r.role == "stylized" and r.method == method]
        styles = sorted({rows[i].style_id for i in idx})
        contents = sorted({rows[i].content_id for i in idx})
        picks = sorted(set(np.linspace(0, len(styles) - 1, min(n_queries, len(styles))).round().astype(int)))
        queries = []
        for n, pick in enumerate(picks):
            style_id, content_id = styles[pick], contents[n % len(contents)]
            candidates = [i for i in idx if rows[i].style_id == style_id]
            query = next((i for i in candidates if rows[i].content_id == content_id), candidates[0])
            corpus = np.array([i for i in idx + style_rows if i != query])
            scores = x[corpus] @ x[query]
            order = np.argsort(-scores, kind="stable")
            source = next(j for j, c in enumerate(corpus[order]) if rows[c].role == "style" and rows[c].style_id == style_id)
            hits = [{"path": rows[c].path, "role": rows[c].role, "style_id": rows[c].style_id,
                     "content_id": rows[c].content_id, "score": round(float(scores[j]), 4),
                     "correct": rows[c].style_id == style_id} for j, c in zip(order[:k], corpus[order[:k]])]
            queries.append({"path": rows[query].path, "style_id": style_id, "content_id": rows[query].content_id,
                            "source_rank": source + 1, "hits": hits})
        out[method] = queries
    return out


def evaluate_model(model: Any, testset: str | Path, *, device: Any = "cpu", batch_size: int = 32, workers: int = 0,
                   queries: int = 4, k: int = 6, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Embed a test set with ``model``: the paper's metrics plus retrieval samples.

    Returns :func:`~nstzoo.eval.metrics.evaluate`'s ``{"methods", "mean"}`` with ``"samples"``
    (:func:`retrieval_samples`) and ``"testset"``. Encoders that take any size (no ``input_sizes``)
    see the test images at their own size, not upsampled.
    """
    from .embed import embed_paths
    from .manifest import manifest_arrays
    from .metrics import evaluate

    testset = Path(testset)
    rows = read_manifest(testset)
    paths = [testset / r.path for r in rows]
    size = max(model.input_sizes) if getattr(model, "input_sizes", ()) else _square_side(paths[0])
    embeddings = embed_paths(model, paths, device=device, batch_size=batch_size, workers=workers, size=size,
                             progress=progress)
    result = evaluate(embeddings, **manifest_arrays(rows))
    result["samples"] = retrieval_samples(embeddings, rows, queries, k) if queries > 0 else {}
    result["testset"] = str(testset)
    return result


def mean_metrics(per_method: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Unweighted mean of ``{"style": {...}, "content": {...}}`` over methods (the paper's "average")."""
    if not per_method:
        return {"style": {}, "content": {}, "n_queries": 0}
    out: dict[str, Any] = {"n_queries": int(sum(m.get("n_queries", 0) for m in per_method))}
    for group in ("style", "content"):
        keys = [key for key in per_method[0][group] if all(key in m[group] for m in per_method)]
        out[group] = {key: float(np.mean([m[group][key] for m in per_method])) for key in keys}
    return out


def testset_methods(testsets: Sequence[str | Path]) -> dict[str, Path]:
    """``{method: test set}`` over the given folders; a method found in two of them is refused.

    Manifests are read (and checked) here, before any encoder is loaded.
    """
    found: dict[str, Path] = {}
    if not testsets:
        raise ConfigError("no test sets given", hint="pass --testset DIR (build one with `nstzoo testset build`)")
    for folder in testsets:
        folder = Path(folder)
        methods = sorted({r.method for r in read_manifest(folder) if r.role == "stylized"})
        for method in methods:
            if method in found:
                raise DataError(f"method {method!r} is in two test sets ({found[method]} and {folder}); "
                                "its column would be ambiguous", hint="pass each method's test set once")
            found[method] = folder
    return found


def evaluate_entry(entry: EncoderEntry, methods: Mapping[str, Path], *, device: Any = "cpu", batch_size: int = 32,
                   workers: int = 0, queries: int = 4, k: int = 6, progress: Callable[[int], None] | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """One entry on every test set of ``methods`` (:func:`testset_methods`).

    Returns ``{"encoder": description, "result": {"methods", "mean"}, "samples": {method: {...}}}``,
    the pieces :func:`compare_document` assembles.
    """
    folders = list(dict.fromkeys(methods.values()))
    model, meta = load_entry(entry, device)
    log(f"evaluating {entry.label} ({meta.get('name')}, {model.embed_dim}-D) on {len(folders)} test set(s)")
    per_method: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for folder in folders:
        result = evaluate_model(model, folder, device=device, batch_size=batch_size, workers=workers,
                                queries=queries, k=k, progress=progress)
        per_method.update(result["methods"])
        samples.update({m: {"testset": str(folder), "queries": q} for m, q in result["samples"].items()})
    ordered = {m: per_method[m] for m in methods}
    described = {**entry.as_dict(), "name": meta.get("name") or entry.name, "step": meta.get("step"),
                 "embed_dim": int(model.embed_dim)}
    return {"encoder": described, "result": {"methods": ordered, "mean": mean_metrics(list(ordered.values()))},
            "samples": samples}


def compare_document(evaluated: Sequence[Mapping[str, Any]], methods: Mapping[str, Path]) -> dict[str, Any]:
    """The ``compare.json`` document from :func:`evaluate_entry` results (one per encoder, in row order)."""
    folders = list(dict.fromkeys(methods.values()))
    return {"kind": COMPARE_KIND, "format": 1, "encoders": [e["encoder"] for e in evaluated],
            "testsets": [{"path": str(f), "methods": [m for m, g in methods.items() if g == f]} for f in folders],
            "methods": list(methods),
            "results": {e["encoder"]["label"]: e["result"] for e in evaluated},
            "samples": {e["encoder"]["label"]: e["samples"] for e in evaluated}}


def compare_encoders(entries: Sequence[EncoderEntry], testsets: Sequence[str | Path], *, device: Any = "cpu",
                     batch_size: int = 32, workers: int = 0, queries: int = 4, k: int = 6,
                     progress: Callable[[int], None] | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every entry on every test set; returns the ``compare.json`` document."""
    methods = testset_methods(testsets)
    evaluated = [evaluate_entry(entry, methods, device=device, batch_size=batch_size, workers=workers,
                                queries=queries, k=k, progress=progress, log=log) for entry in entries]
    return compare_document(evaluated, methods)


def compare_tables(document: Mapping[str, Any]) -> list[Table]:
    """Table 2 (style mAP, IR-1 per test set + average) and Table 3 (the same over content)."""
    methods = list(document["methods"])
    tables = []
    for group, title, note in (
            ("style", "Table 2 — style retrieval (%, higher is better)",
             "mAP: positives are the other stylizations of the query's style; IR-1: its source style image ranks first."),
            ("content", "Table 3 — content retrieval (%, lower is better)",
             "mAP over content ids; IR-1: the query's un-stylized content image ranks first.")):
        columns = ["encoder"] + [f"{m} {metric}" for m in methods for metric in ("mAP", "IR-1")] + \
                  ["average mAP", "average IR-1"]
        rows = []
        for label, result in document["results"].items():
            row: list[Any] = [label]
            for m in methods:
                values = result["methods"].get(m, {}).get(group, {})
                row += [values.get("mAP"), values.get("IR-1")]
            row += [result["mean"][group].get("mAP"), result["mean"][group].get("IR-1")]
            rows.append(row)
        tables.append(Table(title, columns, rows, note))
    return tables


def write_compare(document: Mapping[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``compare.json`` and ``compare.md`` into ``out`` (atomically); returns their paths."""
    import json

    from ..files import atomic_write
    from ..outputs import check_output_folder, write_error

    out = check_output_folder(out)
    encoders = ", ".join(f"`{e['label']}` ({e['kind']}: {e['path'] or e['text']})" for e in document["encoders"])
    sets = ", ".join(f"`{t['path']}` ({', '.join(t['methods'])})" for t in document["testsets"])
    markdown = "\n".join([f"# Encoder comparison\n\nEncoders: {encoders}.\n\nTest sets: {sets}.\n"] +
                         [t.markdown() for t in compare_tables(document)])
    written = {}
    for name, text in ((COMPARE_JSON, json.dumps(document, indent=1)), (COMPARE_MD, markdown)):
        target = out / name
        try:
            written[name] = atomic_write(target, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as err:
            raise write_error(target, err, option="--out") from None
    return written
