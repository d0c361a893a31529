"""Model and checkpoint files: ``.npz`` arrays plus a JSON header, never pickle.

A file holds the architecture, dtype, xbp version and format version as JSON
(stored as a byte array), the parameters, and optionally the optimizer and
its state and a training state. Files are written atomically: a temporary
file in the same directory, flushed and fsynced, then ``os.replace``d over
the target, so a crash leaves either the old file or the new one, never a
mix. Loading uses ``allow_pickle=False`` and builds a fresh network that the
saved arrays must fit exactly.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from .errors import XbpError, XbpFileError, XbpFileNotFoundError, XbpTypeError, XbpValueError
from .network import Dense, Network
from .optim import Optimizer, from_config, state_from_host, state_to_host

__all__ = ["save", "load", "load_checkpoint", "Checkpoint", "FORMAT_VERSION", "atomic_write"]

FORMAT = "xbp-model"
FORMAT_VERSION = 1


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    network: Network
    optimizer: Optimizer | None
    optimizer_state: Any
    training: dict[str, Any]
    metadata: dict[str, Any]


def _check_target_dir(path: Path, argument: str) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise XbpFileNotFoundError(
            f"{argument}={str(path)!r}: the directory {str(parent)!r} does not exist; create it "
            "first (mkdir -p) or choose another path"
        )
    mode = parent.stat().st_mode
    # root ignores permission bits; honour a directory marked read-only all the same
    if not os.access(parent, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise XbpFileError(
            f"{argument}={str(path)!r}: the directory {str(parent)!r} is read-only; choose a "
            "writable directory"
        )
    if path.is_dir():
        raise XbpFileError(f"{argument}={str(path)!r} is a directory; give a file name")
    return parent


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], argument: str = "path"
) -> Path:
    """Write through ``write(fileobj)`` into a temporary file, fsync, then replace ``path``."""
    target = Path(path)
    parent = _check_target_dir(target, argument)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise XbpFileError(f"{argument}={str(target)!r} could not be written: {exc}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return target


def save(
    net: Network,
    path: str | os.PathLike[str],
    *,
    optimizer: Optimizer | None = None,
    optimizer_state: Any = None,
    training: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save a network (and optionally optimizer state and training state) to ``path``.

    ``metadata`` is any JSON-able dict kept beside the model (the CLI stores
    its input scaling there).

    Non-finite weights are refused, so a diverged run never overwrites a good
    file.

    Examples
    --------
    >>> import os, tempfile, xbp
    >>> net = xbp.mlp([2, 3, 1], seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> _ = xbp.save(net, path)
    >>> xbp.load(path).sizes
    [2, 3, 1]
    """
    if not isinstance(net, Network):
        raise XbpTypeError(f"net is a {type(net).__name__}; pass an xbp.Network")
    if optimizer_state is not None and optimizer is None:
        raise XbpValueError("optimizer_state needs optimizer= too, so that it can be rebuilt")
    from . import __version__

    arrays: dict[str, np.ndarray] = {}
    for i, p in enumerate(net.host_params()):
        for key, value in p.items():
            if not np.isfinite(value).all():
                raise XbpValueError(
                    f"net.params[{i}]['{key}'] contains NaN or Inf; refusing to save broken "
                    "weights (restore a good checkpoint or lower the learning rate)"
                )
            arrays[f"param.{i}.{key}"] = value
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xbp_version": __version__,
        "architecture": net.config(),
        "saved_from": {"backend": net.backend.name, "device": str(net.device)},
        "training": training or {},
        "metadata": metadata or {},
    }
    if optimizer is not None:
        meta["optimizer"] = optimizer.config()
        if optimizer_state is not None:
            leaves = state_to_host(optimizer_state, net.backend.to_host)
            for j, leaf in enumerate(leaves):
                arrays[f"opt.{j}"] = leaf
            meta["optimizer_state_leaves"] = len(leaves)
    try:
        header = json.dumps(meta).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise XbpValueError(f"training state is not JSON-serialisable: {exc}") from None
    arrays["meta"] = np.frombuffer(header, dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _read(
    path: str | os.PathLike[str], argument: str = "path"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    p = Path(path)
    if not p.exists():
        raise XbpFileNotFoundError(f"{argument}={str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise XbpFileError(f"{argument}={str(p)!r} is a directory, not an xbp model file")
    try:
        with np.load(p, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise XbpFileError(f"{argument}={str(p)!r} is a .npy array, not an xbp model file")
            files = {k: z[k] for k in z.files}
    except XbpError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise XbpFileError(
                f"{argument}={str(p)!r} holds pickled Python objects; xbp never unpickles (that "
                "could run code). Re-save the model with xbp.save"
            ) from None
        raise XbpFileError(
            f"{argument}={str(p)!r} is not a readable xbp model file ({exc})"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise XbpFileError(
            f"{argument}={str(p)!r} is not a readable xbp model file (truncated or another "
            f"format: {exc}); use a file written by xbp.save"
        ) from None
    if "meta" not in files:
        raise XbpFileError(
            f"{argument}={str(p)!r} has no xbp header; it was not written by xbp.save"
        )
    try:
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise XbpFileError(f"{argument}={str(p)!r} has a corrupt header") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise XbpFileError(f"{argument}={str(p)!r} is not an xbp model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise XbpFileError(
            f"{argument}={str(p)!r} has format version {version!r}, newer than this xbp reads "
            f"(up to {FORMAT_VERSION}); upgrade xbp (pip install -U xbp)"
        )
    return meta, files


def _build(
    meta: dict[str, Any], files: dict[str, np.ndarray], backend: Any, device: Any, argument: str
) -> Network:
    arch = meta["architecture"]
    try:
        layers = [Dense(int(a), int(b), str(act)) for a, b, act in arch["layers"]]
        net = Network(
            layers,
            loss=arch["loss"],
            backend=backend,
            device=device,
            dtype=arch["dtype"],
            seed=arch.get("seed"),
            init=arch.get("init", "auto"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, XbpError) and "backend" in str(exc):
            raise
        raise XbpFileError(f"{argument} has an invalid architecture header ({exc})") from None
    params = []
    for i in range(len(layers)):
        try:
            params.append({k: files[f"param.{i}.{k}"] for k in ("W", "b")})
        except KeyError:
            raise XbpFileError(f"{argument} lacks the parameters of layer {i}") from None
    try:
        net.params = params
    except XbpError as exc:
        raise XbpFileError(f"{argument} does not match its own architecture: {exc}") from None
    return net


def load(path: str | os.PathLike[str], backend: Any = None, device: Any = None) -> Network:
    """Load a network saved by :func:`save` onto any backend and device.

    Parameters
    ----------
    path : str or Path
    backend, device
        Where to put it (default: the current default backend); a model
        trained with CuPy loads on a CPU-only machine.
    """
    meta, files = _read(path)
    return _build(meta, files, backend, device, f"path={str(path)!r}")


def load_checkpoint(
    path: str | os.PathLike[str], backend: Any = None, device: Any = None
) -> Checkpoint:
    """Load a network with its optimizer, optimizer state and training state."""
    meta, files = _read(path)
    argument = f"path={str(path)!r}"
    net = _build(meta, files, backend, device, argument)
    optimizer = state = None
    if "optimizer" in meta:
        optimizer = from_config(meta["optimizer"])
        n = meta.get("optimizer_state_leaves")
        if n is not None:
            try:
                leaves = [files[f"opt.{j}"] for j in range(n)]
            except KeyError:
                raise XbpFileError(f"{argument} lacks part of its optimizer state") from None
            be = net.backend
            state = state_from_host(
                optimizer.init(net.params), leaves, lambda a, dt: be.asarray(a, dt, copy=True)
            )
    return Checkpoint(net, optimizer, state, meta.get("training", {}), meta.get("metadata", {}))


def check_same_architecture(net: Network, other: Network, argument: str) -> None:
    """Refuse to continue ``net``'s run from a file with another architecture."""
    if net.config()["layers"] != other.config()["layers"] or net.loss.name != other.loss.name:
        raise XbpFileError(
            f"{argument} holds a {other.sizes} network ({other.loss.name}) but this run builds "
            f"{net.sizes} ({net.loss.name}); resume with the same --layers/--loss or start anew"
        )
