"""The stylization engine behind ``nstzoo stylize``: many contents x many styles x several stylizers.

One :class:`StylizeJob` describes the work; :func:`run_job` does it and returns a
:class:`JobSummary`. For each stylizer in turn:

1. every pair's output path ``{content}__{style}__{stylizer}.png`` is decided first; existing files
   are skipped (unless ``overwrite``), so a rerun only does what is missing;
2. pending pairs are decoded (unreadable files are skipped and counted, never fatal), resized, and
   grouped by shape, so a batch is one tensor with no padding to a batch maximum; pairs that share
   one style pass it once (batch 1) and the stylizer broadcasts its features;
3. each batch goes through the stylizer on the device in one call, its output checked and clamped
   by :func:`nstzoo.contract.check_output`, named by :func:`nstzoo.contract.plugin_code` if it
   raises; an image too large for the memory budget is stylized in overlapped, blended windows at
   full resolution (:mod:`nstzoo.stylize.tiling`);
4. colour preservation, if asked, post-processes each output; files are written atomically.

Controls (``alpha``, style interpolation) are checked against every stylizer's declared controls
before anything runs (:func:`nstzoo.stylize.controls.check_controls`).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..contract import check_output, plugin_code
from ..data.decode import IMAGE_EXTENSIONS
from ..errors import DataError, NstzooError
from .controls import Controls, check_controls, mixed_name, preserve_color
from .tiling import stylize_tiled, tile_side_for_budget
from .video import VIDEO_EXTENSIONS, is_video

__all__ = ["StylizeJob", "JobSummary", "Stylizer", "resolve_inputs", "output_name", "parse_memory", "run_job",
           "DEFAULT_MAX_MEMORY", "DEFAULT_BYTES_PER_PIXEL", "CPU_BATCH_PIXELS", "LIST_SUFFIXES"]

#: ``--max-memory`` default: what one stylizer run may hold at peak (weights, images, activations).
DEFAULT_MAX_MEMORY = 4 * 1024**3
#: Activation bytes per content pixel assumed for a stylizer that does not state its own
#: (``module.peak_bytes_per_pixel``); conservative (the VGG-based built-ins measure below 1.5 kB).
DEFAULT_BYTES_PER_PIXEL = 3000
#: On the CPU, content pixels per call at most (one 512x512 image): a call of that size already keeps
#: every core busy, and larger batches only stream more activation memory (bench/stylize_speed.py:
#: NeAT at 512 px, 4 images per call 8.0 s/img, one per call 6.5 s/img; AdaIN unchanged). Smaller
#: images are batched up to it, where per-call overhead matters. A module may set ``batch_pixels``.
CPU_BATCH_PIXELS = 512 * 512
#: Text files listing one input path per line (relative paths are relative to the list file).
LIST_SUFFIXES = (".txt", ".lst", ".list")
_GLOB_CHARS = set("*?[")
#: Batches being filled at once, at most (images of many distinct sizes each open one).
MAX_OPEN_BUCKETS = 16


# ----------------------------------------------------------------------------- inputs
def _kind_ok(path: Path, allow_video: bool) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS or (allow_video and suffix in VIDEO_EXTENSIONS)


def resolve_inputs(specs: Sequence[str | os.PathLike[str]], option: str, *, allow_video: bool = False
                   ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand ``--content`` / ``--style`` values into files, in the order given, without duplicates.

    Each value may be an image file, a video file (``allow_video``), a folder (its images, recursively,
    see :func:`nstzoo.data.folder.list_images`), a text list (``.txt``: one path per line, ``#``
    comments) or a glob (``photos/*.jpg``, ``**`` recursive).

    Returns:
        ``(files, skipped)``: the files, and ``(path, reason)`` for entries a folder listing left
        out (unreadable, unsupported format...), which the job counts as unreadable inputs.

    Raises:
        DataError: a value that is neither an existing file or folder nor a glob matching anything,
            naming the option and the value.
    """
    from ..data.folder import list_images

    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for spec in specs:
        text = str(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            try:
                listed = list_images(path, warn=False)
            except DataError as err:
                raise DataError(f"{option} {text!r}: {err.message}") from None
            files.extend(listed)
            for reason, paths in listed.summary.skipped.items():
                if reason in ("unreadable", "unsupported format", "too large"):
                    skipped.extend((p, reason) for p in paths)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                item = Path(line).expanduser()
                item = item if item.is_absolute() else path.parent / item
                if not item.is_file():
                    skipped.append((item, f"listed in {path}:{number} but not a file"))
                elif not _kind_ok(item, allow_video):
                    skipped.append((item, "unsupported format"))
                else:
                    files.append(item)
        elif path.is_file():
            if not _kind_ok(path, allow_video):
                kinds = "image" + (" or video" if allow_video else "")
                raise DataError(f"{option} {text!r}: not an {kinds} file (by its suffix {path.suffix!r})",
                                hint=f"images: {', '.join(IMAGE_EXTENSIONS)}"
                                     + (f"; videos: {', '.join(VIDEO_EXTENSIONS)}" if allow_video else ""))
            files.append(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            matches = [m for m in matches if m.is_file() and _kind_ok(m, allow_video)]
            if not matches:
                raise DataError(f"{option} {text!r}: the pattern matches no image files")
            files.extend(matches)
        else:
            raise DataError(f"{option} {text!r}: no such file or folder")
    unique = list(dict.fromkeys(files))
    if not unique:
        raise DataError(f"{option}: no usable input files" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return unique, skipped


def _labels(paths: Sequence[Path]) -> dict[Path, str]:
    """A label per path for output names: the file stem, with parent folders added where stems clash."""
    labels = {p: p.stem for p in paths}
    depth = 1
    while len(set(labels.values())) < len(labels) and depth < 8:
        counts: dict[str, int] = {}
        for label in labels.values():
            counts[label] = counts.get(label, 0) + 1
        for p, label in labels.items():
            if counts[label] > 1:
                parts = p.with_suffix("").parts
                labels[p] = "-".join(parts[-(depth + 1):])
        depth += 1
    return {p: _safe(label) for p, label in labels.items()}


def _safe(label: str) -> str:
    # Output names must be plain file names; "__" separates the fields, so runs of "_" are shortened.
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.+" else "-" for ch in label)
    while "__" in cleaned:
        cleaned = cleaned.replace("__", "_")
    return cleaned.strip(".") or "image"


def output_name(content: str, style: str, stylizer: str, suffix: str = ".png") -> str:
    """``{content}__{style}__{stylizer}{suffix}``."""
    return f"{content}__{style}__{stylizer}{suffix}"


def parse_memory(text: str | int | float) -> int:
    """``"4GiB"``, ``"1500MB"``, ``"2g"``, ``4294967296`` -> bytes.

    Raises:
        NstzooError: unparseable or not positive, naming the value.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = text.strip().lower().replace(" ", "")
        units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "kb": 1e3, "mb": 1e6, "gb": 1e9,
                 "tb": 1e12, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "b": 1}
        for unit, factor in units.items():
            if raw.endswith(unit):
                number = raw[: -len(unit)]
                break
        else:
            number, factor = raw, 1
        try:
            value = float(number) * factor
        except ValueError:
            raise NstzooError(f"--max-memory {text!r}: give a size such as 4GiB, 1500MB or 2g") from None
    if not value > 0:
        raise NstzooError(f"--max-memory {text!r}: must be positive")
    return int(value)


# ----------------------------------------------------------------------------- one stylizer
@dataclass
class Stylizer:
    """A loaded stylizer with the engine's policies around it: controls, checks, memory, tiling.

    Attributes:
        name: the registered name (for messages and output names).
        module: the ``nn.Module`` in eval mode on ``device``.
        controls: the spec's declared controls.
        plugin: the plugin that registered it (for error attribution).
        max_memory: the peak-memory budget in bytes.
        tile: a fixed window side, or None to derive it from the budget.
        overlap: window overlap in pixels (the blending ramp).
        channels_last: run convolutions in channels-last layout (default: the module's
            ``prefer_channels_last``, else True).
        batch_pixels: content pixels per call at most; a batch is split into calls of that size
            (default on the CPU: the module's ``batch_pixels``, else :data:`CPU_BATCH_PIXELS`; on a
            GPU only the memory budget splits batches).
    """

    name: str
    module: nn.Module
    controls: frozenset[str] = frozenset()
    plugin: str | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    tile: int | None = None
    overlap: int = 64
    channels_last: bool | None = None
    batch_pixels: int | None = None
    _baseline: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        device = next((t.device for t in self.module.state_dict().values()), torch.device("cpu"))
        if device.type == "cpu":
            from .runtime import tune_cpu_allocator

            tune_cpu_allocator()  # batches otherwise page-fault through every large activation
            if self.batch_pixels is None:
                self.batch_pixels = int(getattr(self.module, "batch_pixels", CPU_BATCH_PIXELS))
        if self.channels_last is None:
            # A module whose work is mostly reshapes and matrix products around its convolutions (AdaAttN)
            # says so with prefer_channels_last = False: the layout then costs more copies than it saves.
            self.channels_last = bool(getattr(self.module, "prefer_channels_last", True))
        if self.channels_last:
            # oneDNN / cuDNN convolutions run on channels-last without reordering; results are unchanged.
            self.module.to(memory_format=torch.channels_last)

    @property
    def bytes_per_pixel(self) -> float:
        return float(getattr(self.module, "peak_bytes_per_pixel", DEFAULT_BYTES_PER_PIXEL))

    @property
    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.module.state_dict().values())

    def fixed_bytes(self, pixels: int) -> float:
        """What a run holds besides activations: the process as it is now (interpreter, libraries, weights;
        measured once) and ~6 float copies of a full-resolution image (the decoded original, content,
        output, blending sums and weights)."""
        if self._baseline is None:
            from .runtime import resident_bytes

            self._baseline = resident_bytes(default=1_000_000_000 + self.weight_bytes)
        return self._baseline + 6 * 3 * 4 * pixels

    def fits(self, pixels: int, batch: int = 1) -> bool:
        """Whether ``batch`` images of ``pixels`` go through in one call within the budget."""
        if self.tile is not None:
            return pixels <= self.tile * self.tile
        return self.fixed_bytes(pixels * batch) + self.bytes_per_pixel * pixels * batch <= self.max_memory

    def window(self, pixels: int) -> int:
        if self.tile is not None:
            return self.tile
        return tile_side_for_budget(self.bytes_per_pixel, self.max_memory, self.fixed_bytes(pixels))

    def call(self, content: Tensor, styles: Sequence[Tensor], controls: Controls,
             whole: Tensor | None = None) -> Tensor:
        """One checked call: ``content [B,3,H,W]``, styles K x ``[B or 1,3,H',W']`` -> ``[B,3,H,W]`` in [0, 1].

        Built-in stylizers (and plugins that implement it) go through ``stylize_controlled``, which
        also runs at the content's own size; others through ``forward`` with one style, repeated to
        the batch when given once.
        """
        controlled = getattr(self.module, "stylize_controlled", None)
        if self.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
            styles = [s.contiguous(memory_format=torch.channels_last) for s in styles]
        with plugin_code(self.plugin, self.name, "stylize_controlled" if controlled else "forward"):
            if controlled is not None:
                output = controlled(content, list(styles), alpha=controls.alpha,
                                    style_weights=list(controls.style_weights) if controls.style_weights else None,
                                    whole=whole)
            else:
                style = styles[0]
                if style.shape[0] != content.shape[0]:
                    style = style.expand(content.shape[0], -1, -1, -1)
                output = self.module(content, style)
        output = check_output(self.name, content, output, plugin=self.plugin)
        if controls.preserve_color:
            output = preserve_color(output, content)
        return output

    def stylize(self, content: Tensor, styles: Sequence[Tensor], controls: Controls,
                progress: Callable[[int, int], None] | None = None) -> Tensor:
        """``content [B,3,H,W]`` at full resolution, in one call when it fits the budget, else each image in
        overlapped windows (colour preservation then runs on the whole blended image)."""
        b, _, h, w = content.shape
        per_call = b if self.batch_pixels is None else min(b, max(1, self.batch_pixels // (h * w)))
        if not self.fits(h * w, per_call):
            per_call = 1  # split the batch first; tile only what does not fit alone
        if b > per_call:
            return torch.cat([self.stylize(content[i:i + per_call],
                                           [s if s.shape[0] == 1 else s[i:i + per_call] for s in styles],
                                           controls, progress) for i in range(0, b, per_call)])
        if self.fits(h * w, b):
            return self.call(content, styles, controls)
        side = self.window(h * w)
        overlap = min(self.overlap, side // 4)
        plain = Controls(controls.alpha, controls.style_weights, preserve_color=False)
        out = stylize_tiled(lambda windows, whole: self.call(windows, styles, plain, whole=whole),
                            content, side, overlap, batch=1, progress=progress)
        return preserve_color(out, content) if controls.preserve_color else out


# ----------------------------------------------------------------------------- the job
@dataclass
class StylizeJob:
    """Everything ``nstzoo stylize`` was asked to do.

    Attributes:
        stylizers: names, in order.
        contents: content files (images or videos).
        styles: style image files.
        out_dir: where ``{content}__{style}__{stylizer}.png`` files go.
        pairs: ``"product"`` (every content with every style) or ``"zip"`` (i-th with i-th).
        controls: alpha, style interpolation (then all styles form one mixed style), colour.
        size: shorter side contents are resized to (0 keeps their size).
        style_size: shorter side of the styles (None: ``size``, 0 keeps theirs).
        batch_size: pairs per call at most (also frames per call for videos).
        overwrite: redo existing outputs.
        grid: write ``grid__{stylizer}.png`` contact sheets.
        single_output: write the one pair's result exactly there (``-o``), instead of ``out_dir``.
    """

    stylizers: list[str]
    contents: list[Path]
    styles: list[Path]
    out_dir: Path | None = None
    pairs: str = "product"
    controls: Controls = field(default_factory=Controls)
    size: int = 512
    style_size: int | None = None
    batch_size: int = 8
    overwrite: bool = False
    grid: bool = False
    single_output: Path | None = None


@dataclass
class JobSummary:
    """What :func:`run_job` did; ``as_dict()`` is the ``--json`` record."""

    written: list[dict[str, Any]] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    grids: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    pairs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "written": len(self.written), "skipped_existing": len(self.skipped_existing),
                "unreadable": len(self.unreadable), "unreadable_files": self.unreadable,
                "outputs": self.written, "grids": self.grids,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


@dataclass(frozen=True)
class _Pair:
    content: Path
    styles: tuple[Path, ...]  # one style, or the K styles of an interpolation
    content_label: str
    style_label: str


def plan_pairs(job: StylizeJob) -> list[_Pair]:
    """The (content, style) pairs of the job, with their labels for output names."""
    content_labels, style_labels = _labels(job.contents), _labels(job.styles)
    if job.controls.style_weights is not None:
        mix = tuple(job.styles)
        label = mixed_name([style_labels[s] for s in mix])
        return [_Pair(c, mix, content_labels[c], label) for c in job.contents]
    if job.pairs == "zip":
        if len(job.contents) != len(job.styles):
            raise DataError(f"--pairs zip needs as many contents as styles, got {len(job.contents)} contents and "
                            f"{len(job.styles)} styles")
        return [_Pair(c, (s,), content_labels[c], style_labels[s]) for c, s in zip(job.contents, job.styles)]
    if job.pairs != "product":
        raise DataError(f"--pairs must be 'product' or 'zip', got {job.pairs!r}")
    return [_Pair(c, (s,), content_labels[c], style_labels[s]) for c in job.contents for s in job.styles]


class _Images:
    """Decoded, resized images by path, kept while a stylizer's pass needs them; unreadable ones recorded."""

    def __init__(self, size: int, unreadable: dict[str, str], keep: int = 64):
        self.size, self.unreadable, self.keep = size, unreadable, keep
        self.cache: dict[Path, Tensor] = {}

    def get(self, path: Path) -> Tensor | None:
        if str(path) in self.unreadable:
            return None
        if path in self.cache:
            return self.cache[path]
        from ..data.folder import load_image
        from ..data.transforms import resize_shorter

        try:
            image = load_image(path)
        except DataError as err:
            self.unreadable[str(path)] = err.message
            return None
        if self.size:
            image = resize_shorter(image, self.size)
        if len(self.cache) >= self.keep:
            self.cache.pop(next(iter(self.cache)))
        self.cache[path] = image
        return image


def run_job(job: StylizeJob, load: Callable[[str], Stylizer], *, device: torch.device | str = "cpu",
            skipped_inputs: Iterable[tuple[Path, str]] = (),
            progress: Callable[[str, int], None] | None = None) -> JobSummary:
    """Do ``job``: every pair with every stylizer; see the module docstring.

    Args:
        load: ``load(name) -> Stylizer`` (the CLI loads weights and applies ``--weights`` / ``--random-init``).
        device: where images go.
        skipped_inputs: inputs already left out while listing them (counted as unreadable).
        progress: ``progress(stylizer, n)`` after ``n`` more pairs (or frames of a video) are done.

    Raises:
        ControlError: a stylizer does not declare a requested control (checked before any work).
    """
    summary = JobSummary()
    for path, reason in skipped_inputs:
        summary.unreadable[str(path)] = reason
    pairs = plan_pairs(job)
    summary.pairs = len(pairs)
    device = torch.device(device)
    # Shared by all stylizers, so a small job decodes each file once, not once per stylizer.
    contents = _Images(job.size, summary.unreadable)
    styles = _Images(job.size if job.style_size is None else job.style_size, summary.unreadable)
    for name in job.stylizers:
        stylizer = load(name)
        check_controls(name, stylizer.controls, job.controls)  # load() may be lazy; refuse before work
        start = time.perf_counter()
        _run_one(job, stylizer, pairs, summary, device, contents, styles, progress)
        summary.seconds[name] = time.perf_counter() - start
        if job.grid and job.out_dir is not None:
            summary.grids.append(str(_grid(job, name, pairs)))
    return summary


def _target(job: StylizeJob, pair: _Pair, stylizer: str) -> Path:
    if job.single_output is not None:
        return job.single_output
    assert job.out_dir is not None
    suffix = ".mp4" if is_video(pair.content) else ".png"
    return job.out_dir / output_name(pair.content_label, pair.style_label, stylizer, suffix)


def _run_one(job: StylizeJob, stylizer: Stylizer, pairs: list[_Pair], summary: JobSummary, device: torch.device,
             contents: _Images, styles: _Images, progress: Callable[[str, int], None] | None) -> None:
    name = stylizer.name
    content_size = contents.size
    pending: list[tuple[_Pair, Path]] = []
    for pair in pairs:
        target = _target(job, pair, name)
        if target.exists() and not job.overwrite:
            summary.skipped_existing.append(str(target))
            if progress:
                progress(name, 1)
            continue
        pending.append((pair, target))

    # Videos: one at a time, frames batched.
    for pair, target in [(p, t) for p, t in pending if is_video(p.content)]:
        style_images = [styles.get(s) for s in pair.styles]
        if any(s is None for s in style_images):
            if progress:
                progress(name, 1)
            continue
        style_batch = [s[None].to(device) for s in style_images]

        def frames(batch: Tensor) -> Tensor:
            return stylizer.stylize(batch.to(device), style_batch, job.controls).cpu()

        def resize(h: int, w: int) -> tuple[int, int]:
            if not content_size:
                return h, w
            scale = content_size / min(h, w)
            return max(2, round(h * scale)), max(2, round(w * scale))

        try:
            from .video import stylize_video

            info = stylize_video(pair.content, target, frames, batch=job.batch_size, size=resize)
        except DataError as err:
            summary.unreadable[str(pair.content)] = err.message
        else:
            summary.written.append({"stylizer": name, "content": str(pair.content),
                                    "style": [str(s) for s in pair.styles], "output": str(target), **info})
        if progress:
            progress(name, 1)

    # Images: bucket by shapes, flush full buckets, then the rest.
    buckets: dict[tuple, list[tuple[_Pair, Path, Tensor, list[Tensor]]]] = {}

    def flush(key: tuple) -> None:
        items = buckets.pop(key)
        content = torch.stack([c for _, _, c, _ in items]).to(device)
        shared = all(item[0].styles == items[0][0].styles for item in items)
        if shared:  # one style (or mix) for the whole batch: encoded once, broadcast by the stylizer
            style_list = [s[None].to(device) for s in items[0][3]]
        else:
            style_list = [torch.stack([item[3][k] for item in items]).to(device) for k in range(len(items[0][3]))]
        result = stylizer.stylize(content, style_list, job.controls).cpu()
        from ..data.folder import save_image
        from ..outputs import write_error

        for (pair, target, _, _), image in zip(items, result):
            try:
                save_image(image, target)
            except OSError as err:
                raise write_error(target, err, option="--out" if job.single_output is None else "--output") from None
            summary.written.append({"stylizer": name, "content": str(pair.content),
                                    "style": [str(s) for s in pair.styles] if len(pair.styles) > 1
                                    else str(pair.styles[0]), "output": str(target),
                                    "size": list(image.shape[-2:])})
        if progress:
            progress(name, len(items))

    group_by_style = _style_shared_worth_it(pairs)
    images = [(p, t) for p, t in pending if not is_video(p.content)]
    if group_by_style:
        # Style-major order fills one style's bucket at a time, so few buckets are open at once.
        order = {styles_: i for i, styles_ in enumerate(dict.fromkeys(p.styles for p, _ in images))}
        images.sort(key=lambda item: order[item[0].styles])
    for pair, target in images:
        content = contents.get(pair.content)
        style_images = [styles.get(s) for s in pair.styles]
        if content is None or any(s is None for s in style_images):
            if progress:
                progress(name, 1)
            continue
        shape_key = (tuple(content.shape), tuple(tuple(s.shape) for s in style_images))
        bucket_key = (shape_key, pair.styles) if group_by_style else (shape_key,)
        buckets.setdefault(bucket_key, []).append((pair, target, content, style_images))
        pixels = content.shape[-2] * content.shape[-1]
        limit = job.batch_size if stylizer.fits(pixels, job.batch_size) else 1
        if len(buckets[bucket_key]) >= limit:
            flush(bucket_key)
        elif len(buckets) > MAX_OPEN_BUCKETS:  # many distinct sizes: bound the images held in memory
            flush(max(buckets, key=lambda k: len(buckets[k])))
    for key in list(buckets):
        flush(key)


def _style_shared_worth_it(pairs: Sequence[_Pair]) -> bool:
    """Group by style file when styles repeat across pairs (many contents x few styles): the style is then
    encoded once per batch instead of once per pair."""
    styles = {p.styles for p in pairs}
    return len(styles) < len(pairs)


def _grid(job: StylizeJob, name: str, pairs: Sequence[_Pair]) -> Path:
    from .grid import contact_sheet

    assert job.out_dir is not None
    contents = list(dict.fromkeys((p.content_label, p.content) for p in pairs if not is_video(p.content)))
    styles = list(dict.fromkeys((p.style_label, p.styles[0]) for p in pairs))
    results = {(p.content_label, p.style_label): _target(job, p, name) for p in pairs}
    return contact_sheet(job.out_dir / f"grid__{name}.png", contents, styles, results, title=name)
