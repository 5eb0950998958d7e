"""Writing files so that a crash or a full disk never leaves a half-written one behind.

Every file nstzoo writes that a later step reads (weights, checkpoints, images, manifests,
configs, logs) goes through :func:`atomic_write`. No torch import here: the torch-free parts of
the package (the manifest, the metrics) use it too.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    The result gets the usual permissions (``0o666`` less the process umask) whatever ``write``
    used: ``tempfile.mkstemp`` and safetensors' writer both make owner-only (0600) files, and
    exported weights and test-set images are meant to be shared. On failure the temporary file is
    removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def drop_jsonl_records(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite a JSON-lines log keeping only the records ``keep`` accepts (no-op if it is absent).

    Training loops use it on resume: records past the checkpoint are dropped because those steps
    are run again, so the log reads as one uninterrupted run.
    """
    path = Path(path)
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and keep(json.loads(line))]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))
