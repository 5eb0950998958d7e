"""Where a command will write, checked before it does any work: no silent overwrite, no traceback.

A command that writes a file calls :func:`check_output_file` first, so that a typo costs a one-line
error (exit status 2) instead of minutes of work ending in a traceback, and an existing file is
replaced only when the user says so. No torch import here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import NstzooError

__all__ = ["OutputError", "check_output_file", "check_output_folder", "same_file", "write_error"]


class OutputError(NstzooError):
    """An output path that would overwrite something, or that cannot be written."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` name the same file (through links, relative paths, hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we may write in."""
    parent = path.parent if str(path.parent) else Path(".")
    ancestor = parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise OutputError(f"{option} {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {str(path)!r}: cannot write in {str(ancestor)!r} (permission denied)")


def check_output_file(path: str | os.PathLike[str], *, overwrite: bool = False,
                 inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (), option: str = "--output",
                 overwrite_flag: str = "--overwrite", suffixes: Iterable[str] = ()) -> Path:
    """Refuse an output file that cannot be written or would replace something it should not.

    Args:
        path: the file the command will write.
        overwrite: the user allowed replacing an existing file.
        inputs: ``(option, path)`` of the command's inputs: writing over one of them is refused
            even with ``overwrite`` (the command would destroy what it reads).
        option: the option's name, for the message.
        overwrite_flag: the flag that allows replacing a file, for the hint.
        suffixes: accepted file suffixes (lower case, with the dot); empty: any.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: naming the path and what is wrong.
    """
    path = Path(path)
    wanted = tuple(suffixes)
    if path.is_dir():
        raise OutputError(f"{option} {str(path)!r} is a folder; give a file name")
    if wanted and path.suffix.lower() not in wanted:
        raise OutputError(f"{option} {str(path)!r}: use a file name ending in {' or '.join(wanted)}")
    for input_option, input_path in inputs:
        if input_path is not None and path.exists() and same_file(path, input_path):
            raise OutputError(f"{option} {str(path)!r} is also the {input_option} file; refusing to overwrite an input",
                              hint=f"write the result to another file than {str(input_path)!r}")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {str(path)!r} already exists; not replacing it",
                          hint=f"pass {overwrite_flag} to replace it, or choose another file name")
    # Files are written atomically (a temporary file renamed over the target), so what matters is
    # the folder's permission, not the existing file's.
    _check_parent(path, option)
    return path


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Refuse an output folder that is a file or lies where we may not create or write it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {str(path)!r} is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{option} {str(path)!r}: cannot write in it (permission denied)")
        return path
    _check_parent(path, option)
    return path


def write_error(path: str | os.PathLike[str], err: OSError, option: str = "--output") -> OutputError:
    """A one-line error for a write that failed anyway (disk full, a race with another process)."""
    return OutputError(f"{option} {str(path)!r}: cannot write it ({(err.strerror or str(err)).lower()})")
