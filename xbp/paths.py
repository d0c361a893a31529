"""Path safety for every file xbp reads or writes.

* :func:`input_file` checks a path to read with ``stat`` before anything opens
  it: missing files, directories, FIFOs, devices and sockets are refused with
  a one-line error, so a named pipe never blocks a read.
* :func:`output_file` checks a path to write before any work is done: the
  directory exists and is writable, the name fits the file system, and the
  path is not a directory or a special file.
* :func:`check_distinct` compares every path a command writes with every path
  it reads and every other path it writes (after symlinks), so no output can
  destroy an input or another output.
* :func:`sniff` names a file's format from its first bytes, for error
  messages that say what a file is and what was expected.

Nothing here imports the rest of xbp except :mod:`xbp.errors`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError

__all__ = [
    "as_path",
    "input_file",
    "output_file",
    "write_target",
    "check_distinct",
    "sniff",
    "describe",
    "label",
    "new_file_mode",
]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def as_path(path: Any, argument: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; anything but a str or PathLike is refused."""
    if isinstance(path, (bytes, bool)) or not isinstance(path, (str, os.PathLike)):
        raise XbpTypeError(
            f"{argument} is a {type(path).__name__}; pass a file path (str or pathlib.Path)"
        )
    p = Path(path)
    if not str(path):
        raise XbpValueError(f"{argument} is an empty path; pass a file name")
    return p


def label(argument: str, path: Any) -> str:
    """How messages name a file: ``path='m.npz'``, or ``--data 'd.csv'`` for a CLI option."""
    text = repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)
    return f"{argument} {text}" if argument.startswith("--") else f"{argument}={text}"


def _kind(mode: int) -> str | None:
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def input_file(path: Any, argument: str, what: str = "file") -> Path:
    """Check a file to read without opening it: it exists, is regular and readable.

    Parameters
    ----------
    path : str or Path
    argument : str
        The name in error messages (``"path"``, ``"--data"``).
    what : str
        What the file should be, for messages (``"an xbp model file"``).
    """
    p = as_path(path, argument)
    name = label(argument, p)
    try:
        st = os.stat(p)  # follows symlinks; never opens the file
    except FileNotFoundError:
        raise XbpFileNotFoundError(f"{name} does not exist; check the path") from None
    except NotADirectoryError:
        raise XbpFileNotFoundError(f"{name} does not exist (a parent is a file)") from None
    except OSError as exc:
        raise XbpFileError(f"{name} cannot be read ({exc.strerror}); check the path") from None
    kind = _kind(st.st_mode)
    if kind == "a directory":
        raise XbpFileError(f"{name} is a directory; give {what}")
    if kind is not None:
        raise XbpFileError(
            f"{name} is {kind}, not a regular file; xbp reads only regular files (copy the "
            "data into a file first)"
        )
    if not os.access(p, os.R_OK):
        raise XbpFileError(f"{name} is not readable (permission denied); check its mode")
    return p


def name_max(directory: Path) -> int:
    """The longest file name (in bytes) the file system of ``directory`` allows."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def output_file(path: Any, argument: str) -> Path:
    """Check a path to write before any work: directory, permissions, name length, kind.

    Returns the directory the file will be written in (that of a symlink's
    final target). A path that exists must be a regular file (or a link to
    one): it is replaced atomically, keeping its permission bits.
    """
    p = as_path(path, argument)
    name = label(argument, p)
    parent = p.parent
    limit = name_max(parent if parent.is_dir() else Path("."))
    if len(os.fsencode(p.name)) > limit:
        raise XbpFileError(
            f"{name}: the file name is {len(os.fsencode(p.name))} bytes long but this "
            f"file system allows at most {limit}; choose a shorter name"
        )
    target = write_target(p)
    parent = target.parent
    if not parent.is_dir():
        raise XbpFileNotFoundError(
            f"{name}: the directory {str(parent)!r} does not exist; create it first "
            "(mkdir -p) or choose another path"
        )
    mode = parent.stat().st_mode
    # root ignores permission bits; honour a directory marked read-only all the same
    if not os.access(parent, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise XbpFileError(
            f"{name}: the directory {str(parent)!r} is read-only; choose a writable directory"
        )
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return parent
    except OSError as exc:
        raise XbpFileError(f"{name} cannot be checked ({exc.strerror})") from None
    kind = _kind(st.st_mode)
    if kind == "a directory":
        raise XbpFileError(f"{name} is a directory; give a file name")
    if kind is not None:
        raise XbpFileError(
            f"{name} is {kind}, not a regular file; xbp writes files atomically and would "
            "replace it (omit the option to print to the terminal, or name a file)"
        )
    return parent


def write_target(path: Path) -> Path:
    """The file a write to ``path`` replaces: a symlink's final target, else ``path``.

    Writing through a link replaces the file it points to and keeps the link.
    """
    try:
        if not path.is_symlink():
            return path
    except OSError:  # a name too long, a parent that is a file: the write will say
        return path
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:  # hard links and other aliases of one existing file
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(
    reads: Mapping[str, Any],
    writes: Mapping[str, Any],
    allowed: Iterable[tuple[str, str]] = (),
) -> None:
    """Refuse a command whose outputs would overwrite one of its inputs or each other.

    Parameters
    ----------
    reads, writes : mapping of option name to path (None entries are ignored)
        e.g. ``{"--data": "d.csv"}`` and ``{"--out": "p.csv", "--save": "m.npz"}``;
        name the files read from a directory, not the directory.
    allowed : pairs of option names that may name the same file
        e.g. ``[("--checkpoint", "--resume")]``: a resumed run keeps writing
        its checkpoint.
    """
    ok = {frozenset(pair) for pair in allowed}
    outs = [(k, Path(os.fspath(v))) for k, v in writes.items() if v is not None]
    ins = [(k, Path(os.fspath(v))) for k, v in reads.items() if v is not None]
    for i, (wname, wpath) in enumerate(outs):
        for rname, rpath in ins:
            if frozenset((wname, rname)) in ok:
                continue
            if _same(wpath, rpath):
                raise XbpValueError(
                    f"{wname} {str(wpath)!r} is the same file as {rname} {str(rpath)!r}; "
                    f"writing it would destroy that input; choose another {wname} path"
                )
        for oname, opath in outs[i + 1 :]:
            if frozenset((wname, oname)) in ok:
                continue
            if _same(wpath, opath):
                raise XbpValueError(
                    f"{wname} {str(wpath)!r} and {oname} {str(opath)!r} are the same file; "
                    "one output would replace the other; give them different paths"
                )


_MAGIC = (
    (b"PK\x03\x04", "npz"),
    (b"PK\x05\x06", "npz"),  # an empty zip archive
    (b"\x93NUMPY", "npy"),
    (b"\x1f\x8b", "gzip"),
    (b"\x89PNG", "png"),
)

_DESCRIPTIONS = {
    "npz": "an .npz archive",
    "npy": "a .npy file (one array, written by np.save)",
    "gzip": "a gzip-compressed file",
    "png": "a PNG image",
    "empty": "an empty file",
    "text": "a text file",
    "legacy-text": "text in an 8-bit encoding such as Latin-1 or Windows-1252",
    "utf16-text": "UTF-16 text",
    "binary": "a binary file of unknown format",
}


def sniff(path: Path) -> str:
    """The format of a regular file from its first bytes.

    One of ``"npz"``, ``"npy"``, ``"gzip"``, ``"png"``, ``"empty"``, ``"text"``,
    ``"legacy-text"`` (printable text that is not UTF-8: Latin-1 and its kin),
    ``"utf16-text"`` (a UTF-16 byte-order mark),
    ``"binary"``. Call :func:`input_file` first: this opens the file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise XbpFileError(f"{str(path)!r} cannot be read ({exc.strerror})") from None
    if not head:
        return "empty"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark
        return "utf16-text"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character may be cut at the end of the sample
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            # printable text in Windows-1252 (smart quotes, the euro sign) or Latin-1 (every
            # byte is a character there) is an 8-bit encoding, not a binary format
            for encoding in ("cp1252", "latin-1"):
                try:
                    legacy = head.decode(encoding)
                except UnicodeDecodeError:
                    continue
                if all(c.isprintable() or c in "\r\n\t" for c in legacy):
                    return "legacy-text"
            return "binary"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return "binary"


def describe(kind: str) -> str:
    """Words for a :func:`sniff` result: ``"npy"`` -> ``"a .npy file (one array, ...)"``."""
    return _DESCRIPTIONS.get(kind, kind)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # read it by setting it; restored at once
    os.umask(mask)
    return mask


def new_file_mode(target: Path) -> int:
    """Permission bits for a file written over ``target``.

    An existing file keeps its own mode; a new one gets ``0o666`` less the
    umask, as ``open()`` would give it.
    """
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()
