"""Path safety for every file xbp reads or writes.

* :func:`input_file` checks a path to read with ``stat`` before anything opens
  it: missing files, directories, FIFOs, devices and sockets are refused with
  a one-line error, so a named pipe never blocks a read.
* :func:`output_file` checks a path to write before any work is done: the
  directory exists and is writable, the name fits the file system, and the
  path is not a directory or a special file.
* :func:`check_distinct` compares every path a command writes with every path
  it reads and every other path it writes (after symlinks), so no output can
  destroy an input or another output; :func:`check_files` is the whole output
  rule (each output writable, then distinct), the one function the library
  (:func:`xbp.fit`) and the CLI both apply, and :func:`backing_file` names the
  file behind a memory-mapped input, so a memory map counts as a read.
* :class:`RunLock` holds an advisory lock (``fcntl.flock``) on a run's outputs,
  so two runs started together with the same checkpoint or log cannot
  interleave their epochs.
* :func:`sniff` names a file's format from its first bytes, for error
  messages that say what a file is and what was expected.

Nothing here imports the rest of xbp except :mod:`xbp.errors`.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError

__all__ = [
    "as_path",
    "input_file",
    "output_file",
    "write_target",
    "check_distinct",
    "check_files",
    "backing_file",
    "RunLock",
    "sniff",
    "describe",
    "label",
    "new_file_mode",
]

#: how a new file of our own is opened: never an existing one (as tempfile.mkstemp does)
_EXCLUSIVE = (
    os.O_RDWR
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOINHERIT", 0)
)


def new_file(folder: str | os.PathLike[str], prefix: str, suffix: str, names: list[str]) -> int:
    """Create a new file ``folder/<prefix><random><suffix>`` (mode 0600, never an existing
    file) and return its open descriptor.

    Its name is appended to ``names`` *before* the file is created, so an interrupt
    (Ctrl-C, SIGTERM) at any moment leaves the caller a name to remove:
    ``tempfile.mkstemp`` returns the name only after creating the file, and an
    interrupt in between leaves a file nobody knows of. A name whose file was never
    created is harmless to remove (``FileNotFoundError``).

    Examples
    --------
    >>> import os, tempfile
    >>> from xbp.io.paths import new_file
    >>> names = []
    >>> fd = new_file(tempfile.mkdtemp(), ".model.", ".tmp", names)
    >>> os.close(fd); os.path.basename(names[0]).startswith(".model."), len(names)
    (True, 1)
    >>> os.unlink(names.pop())
    """
    while True:
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{suffix}")
        names.append(name)
        try:
            return os.open(name, _EXCLUSIVE, 0o600)
        except FileExistsError:  # another writer's file: leave it, draw again
            names.remove(name)


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


def check_files(
    reads: Mapping[str, Any],
    writes: Mapping[str, Any],
    allowed: Iterable[tuple[str, str]] = (),
) -> None:
    """The output rule of every command and run, applied before any work.

    Each output (a None entry is skipped) must be writable (:func:`output_file`),
    then no output may name an input or another output (:func:`check_distinct`).
    :func:`xbp.fit` applies it to its checkpoint and logs against its
    memory-mapped inputs and ``resume`` file, ``xbp train`` to every flag.

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     check_files({"x": "d.npy"}, {"checkpoint": "d.npy"})
    ... except xbp.errors.XbpValueError as exc:
    ...     print(str(exc).split(";")[0])
    checkpoint 'd.npy' is the same file as x 'd.npy'
    """
    for name, path in writes.items():
        if path is not None:
            output_file(path, name)
    check_distinct(reads, writes, allowed)


def backing_file(data: Any) -> str | None:
    """The file a memory-mapped input reads from, or None for data in memory.

    Follows views (``xm[:100]``, ``np.asarray(xm)``, a :class:`xbp.data.MappedRows`
    over a map, a torch tensor made by ``torch.from_numpy``) down to the
    ``numpy.memmap`` they share memory with.

    Examples
    --------
    >>> import numpy as np
    >>> backing_file(np.zeros(3)) is None
    True
    """
    seen = 0
    obj = data
    while obj is not None and seen < 64:  # a chain of views; bounded against cycles
        seen += 1
        name = getattr(obj, "filename", None)  # a str or Path, as np.load was given it
        if isinstance(name, (str, os.PathLike)) and os.fspath(name):
            return str(os.fspath(name))
        nxt = getattr(obj, "raw", None)  # MappedRows reads ``raw``
        if nxt is None:
            base = getattr(obj, "base", None)
            nxt = base if base is not obj else None
        if nxt is None and not isinstance(obj, memoryview):
            # a tensor sharing a NumPy array's memory: look through its buffer
            try:
                nxt = memoryview(obj).obj  # type: ignore[arg-type]
            except TypeError:
                nxt = None
            if nxt is obj:
                nxt = None
        obj = nxt
    return None


class RunLock:
    """An advisory, non-blocking lock on a run's output files (checkpoint, log).

    Each path gets a hidden lock file beside it (``.NAME.lock``, holding the
    owner's process id) locked with ``fcntl.flock``; a second run asking for a
    path another run holds gets a one-line :class:`xbp.errors.XbpFileError` naming that
    run's lock, before it writes anything. The lock files are removed when the
    run ends; a killed run's lock is released by the system (a stale lock file
    is reused). Where ``fcntl`` does not exist (Windows) nothing is locked.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ck.npz")
    >>> with RunLock({"checkpoint": path}):
    ...     try:
    ...         RunLock({"checkpoint": path}).acquire()
    ...     except XbpFileError as exc:
    ...         print(str(exc).split(" (")[0])
    checkpoint='...ck.npz' is in use by another run
    """

    def __init__(self, paths: Mapping[str, Any]) -> None:
        self.paths = {k: v for k, v in paths.items() if v is not None}
        self._held: list[tuple[int, str]] = []

    @staticmethod
    def lock_path(path: Any) -> str:
        """The lock file of ``path``: ``.NAME.lock`` beside the file it names."""
        target = write_target(Path(os.fspath(path)))
        return str(target.with_name(f".{target.name[:200]}.lock"))

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: nothing to hold
            return self
        taken: set[str] = set()
        try:
            for argument, path in self.paths.items():
                where = self.lock_path(path)
                if where in taken:
                    continue
                self._held.append((self._lock_one(fcntl, where, argument, path), where))
                taken.add(where)
        except BaseException:
            self.release()
            raise
        return self

    @staticmethod
    def _lock_one(fcntl: Any, where: str, argument: str, path: Any) -> int:
        for _ in range(100):  # another run may remove the lock file between open and lock
            try:
                fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise XbpFileError(
                    f"{label(argument, path)}: its lock file {where!r} cannot be created "
                    f"({exc.strerror}); choose a writable directory"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                except OSError:
                    owner = ""
                os.close(fd)
                who = f"process {owner}" if owner.isdigit() else "another process"
                raise XbpFileError(
                    f"{label(argument, path)} is in use by another run ({who} holds its lock "
                    f"{where!r}); wait for that run to end, or give this run another path"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(where).st_ino
            except OSError:
                same = False
            if not same:  # locked a file its owner had just removed: try again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        raise XbpFileError(f"{label(argument, path)}: its lock {where!r} could not be taken")

    def release(self) -> None:
        """Remove the lock files and release the locks (removed first: no other run
        can lock a file that is about to disappear)."""
        while self._held:
            fd, where = self._held.pop()
            try:
                os.unlink(where)
            except OSError:
                pass
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
