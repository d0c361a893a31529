"""Model and checkpoint files: ``.npz`` arrays plus a JSON header, never pickle.

A file holds the architecture, dtype, xbp version and format version as JSON
(stored as a byte array), the parameters, and optionally the optimizer and
its state and a training state. Files are written atomically: a temporary
file in the same directory, flushed and fsynced, then ``os.replace``d over
the target, so a crash leaves either the old file or the new one, never a
mix; a new file gets ``0o666`` less the umask, a replaced one keeps its mode,
and a symlink keeps pointing at the file it named. What would not load back
(an optimizer state of another optimizer, NaN weights) is refused before the
old file is touched. Loading stats the path first (a FIFO is never opened),
names a foreign file for what it is, uses ``allow_pickle=False``, checks the
type of every header field and builds a fresh network that the saved arrays
must fit exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from .activations import get_activation
from .errors import XbpError, XbpFileError, XbpTypeError, XbpValueError
from .losses import get_loss
from .network import Network
from .optim import Optimizer, from_config, state_from_host, state_to_host
from .paths import as_path, describe, input_file, new_file_mode, output_file, sniff, write_target
from .paths import label as name_file

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

    @property
    def resumable(self) -> bool:
        """True when the file holds what resuming needs: optimizer, its state, an epoch."""
        return (
            self.optimizer is not None
            and self.optimizer_state is not None
            and isinstance(self.training.get("epoch"), int)
        )


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], argument: str = "path"
) -> Path:
    """Write through ``write(fileobj)`` into a temporary file, fsync, then replace ``path``.

    The temporary file lies in the target's directory, so the replace is atomic:
    a crash leaves the old file or the new one. A new file gets the permission
    bits ``open()`` would give it (0666 less the umask), a replaced file keeps
    its own; a symlink keeps pointing where it did and the file it points to is
    replaced.
    """
    if not callable(write):
        raise XbpTypeError(f"write is a {type(write).__name__}; pass a function of a file object")
    given = as_path(path, argument)
    parent = output_file(given, argument)
    target = write_target(given)
    mode = new_file_mode(target)
    # a short temporary name: a target name near the file system's limit must still work
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name[:32]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise XbpFileError(f"{argument}={str(given)!r} could not be written: {exc}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return given


def _check_optimizer_state(net: Network, optimizer: Optimizer, state: Any) -> list[np.ndarray]:
    """The state's host leaves, after checking they fit ``optimizer`` (as load will)."""
    try:
        leaves = state_to_host(state, net.backend.to_host)
    except Exception as exc:  # any foreign object: the state cannot be written
        raise XbpTypeError(
            f"optimizer_state is not an optimizer state ({type(exc).__name__}: {exc}); pass "
            "the state the optimizer built (optimizer.init(net.params) and its updates)"
        ) from None
    template_params = [
        {k: np.zeros(tuple(v.shape), dtype=np.float64) for k, v in p.items()} for p in net.params
    ]
    expected = state_to_host(optimizer.init(template_params), np.asarray)
    problem = None
    if len(leaves) != len(expected):
        problem = f"it has {len(leaves)} arrays but {optimizer.name} keeps {len(expected)}"
    else:
        for j, (got, want) in enumerate(zip(leaves, expected)):
            if tuple(np.shape(got)) != tuple(np.shape(want)):
                problem = (
                    f"its array {j} has shape {tuple(np.shape(got))} but {optimizer.name} keeps "
                    f"{tuple(np.shape(want))} there"
                )
                break
    if problem is not None:
        raise XbpValueError(
            f"optimizer_state does not belong to optimizer={optimizer.name!r} on this network "
            f"({problem}); a file saved so could not be loaded, so nothing was written: pass "
            "the state this optimizer built (optimizer.init(net.params) and its updates)"
        )
    return leaves


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
    path = as_path(path, "path")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise XbpTypeError(
            f"optimizer is a {type(optimizer).__name__}; pass an xbp.optim optimizer "
            "(e.g. xbp.optim.adam(1e-3)) or None"
        )
    if optimizer_state is not None and optimizer is None:
        raise XbpValueError("optimizer_state needs optimizer= too, so that it can be rebuilt")
    for name, part in (("training", training), ("metadata", metadata)):
        if part is not None and not isinstance(part, dict):
            raise XbpTypeError(f"{name} is a {type(part).__name__}; pass a JSON-able dict or None")
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
    for i, st in enumerate(net.host_state()):
        for key, value in st.items():
            arrays[f"state.{i}.{key}"] = value
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
            leaves = _check_optimizer_state(net, optimizer, optimizer_state)
            for j, leaf in enumerate(leaves):
                arrays[f"opt.{j}"] = leaf
            meta["optimizer_state_leaves"] = len(leaves)
    try:
        header = json.dumps(meta).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise XbpValueError(
            f"training or metadata is not JSON-serialisable ({exc}); pass plain dicts, lists, "
            "strings and numbers"
        ) from None
    arrays["meta"] = np.frombuffer(header, dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


_MODEL = "an xbp model file (an .npz written by xbp.save)"


def _read(
    path: str | os.PathLike[str], argument: str = "path"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    p = input_file(path, argument, _MODEL)
    label = name_file(argument, p)
    kind = sniff(p)
    if kind != "npz":
        raise XbpFileError(
            f"{label} is {describe(kind)}, not a readable xbp model file (an .npz written by "
            "xbp.save)"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise XbpFileError(
                f"{label} holds pickled Python objects; xbp never unpickles (that could run "
                "code). Re-save the model with xbp.save"
            ) from None
        raise XbpFileError(f"{label} is not a readable xbp model file ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise XbpFileError(
            f"{label} is not a readable xbp model file (truncated or another "
            f"format: {exc}); use a file written by xbp.save"
        ) from None
    if "meta" not in files:
        raise XbpFileError(f"{label} has no xbp header; it was not written by xbp.save")
    try:
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise XbpFileError(f"{label} has a corrupt header") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise XbpFileError(f"{label} is not an xbp model file")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise XbpFileError(
            f"{label} has format version {version!r}, newer than this xbp reads "
            f"(up to {FORMAT_VERSION}); upgrade xbp (pip install -U xbp)"
        )
    for key in ("training", "metadata"):
        if not isinstance(meta.get(key, {}), dict):
            raise XbpFileError(
                f"{label} has a corrupt header: '{key}' is a {type(meta[key]).__name__}, not "
                "a mapping"
            )
    return meta, files


def _check_parts(arch: Any, argument: str) -> None:
    """A model names its activations and loss; each must be known here (built in or
    registered), else one line says which is missing and how to register it."""
    if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
        return  # the header check below names what is wrong
    needed = [
        ("activation", layer[2] if isinstance(layer, list) else layer.get("activation"))
        for layer in arch["layers"]
        if (isinstance(layer, list) and len(layer) == 3) or isinstance(layer, dict)
    ]
    needed.append(("loss", arch.get("loss")))
    for kind, name in needed:
        if not isinstance(name, str):
            continue
        known = get_activation if kind == "activation" else get_loss
        try:
            known(name)
        except XbpValueError:
            how = (
                f"xbp.register_activation({name!r}, forward, derivative)"
                if kind == "activation"
                else f"xbp.register_loss({name!r}, value, grad)"
            )
            raise XbpFileError(
                f"{argument} needs the {kind} {name!r}, which is not registered in this "
                f"process; run {how} with the same definition before loading it (from the "
                "shell: xbp --import MODULE ..., where MODULE registers it)"
            ) from None


def _build(
    meta: dict[str, Any], files: dict[str, np.ndarray], backend: Any, device: Any, argument: str
) -> Network:
    _check_parts(meta.get("architecture") if isinstance(meta, dict) else None, argument)
    try:
        arch = meta["architecture"]
        layers = Network.layers_from_config(arch, f"{argument}'s architecture")
        net = Network(
            layers,
            loss=arch["loss"],
            backend=backend,
            device=device,
            dtype=arch["dtype"],
            seed=arch.get("seed"),
            init=arch.get("init", "auto"),
        )
        net.restore_precision(arch.get("precision", "exact"))
        net.classes = arch.get("classes")
        net.feature_names = arch.get("feature_names")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, XbpError) and "backend" in str(exc):
            raise
        if isinstance(exc, XbpError) and "not registered" in str(exc):
            raise XbpFileError(str(exc)) from None
        raise XbpFileError(f"{argument} has an invalid architecture header ({exc})") from None
    params, state = [], []
    for i, layer in enumerate(net.layers):
        try:
            params.append({k: files[f"param.{i}.{k}"] for k in layer.param_shapes()})
        except KeyError:
            raise XbpFileError(f"{argument} lacks the parameters of layer {i}") from None
        try:  # files of networks without state hold none
            state.append({k: files[f"state.{i}.{k}"] for k in layer.state_shapes()})
        except KeyError:
            raise XbpFileError(f"{argument} lacks the state of layer {i}") from None
    try:
        net.params = params
        net.state = state
    except XbpError as exc:
        raise XbpFileError(f"{argument} does not match its own architecture: {exc}") from None
    return net


def load(
    path: str | os.PathLike[str], backend: Any = None, device: Any = None, *, argument: str = "path"
) -> Network:
    """Load a network saved by :func:`save` onto any backend and device.

    Parameters
    ----------
    path : str or Path
    backend, device
        Where to put it (default: the current default backend); a model
        trained with CuPy loads on a CPU-only machine.
    argument : str
        The name error messages give the file (the CLI passes ``"model"``).
    """
    meta, files = _read(path, argument)
    return _build(meta, files, backend, device, name_file(argument, path))


# the training state keys a resumable checkpoint holds, with their types
_TRAINING_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "step": (int,),
    "rng": (dict,),
    "history": (dict,),
    "callbacks": (list,),
    "lr_scale": (int, float),
    "retries": (int,),
}


def _check_training(training: dict[str, Any], argument: str) -> None:
    for key, types in _TRAINING_TYPES.items():
        if key not in training or training[key] is None and key not in ("epoch", "step"):
            continue
        value: Any = training[key]
        negative = isinstance(value, int) and value < 0 and key in ("epoch", "step")
        if isinstance(value, bool) or not isinstance(value, types) or negative:
            raise XbpFileError(
                f"{argument} has a corrupt training state: '{key}' is {value!r}; the file was "
                "not written by xbp (or was edited); use a checkpoint written by fit"
            )


def load_checkpoint(
    path: str | os.PathLike[str], backend: Any = None, device: Any = None, *, argument: str = "path"
) -> Checkpoint:
    """Load a network with its optimizer, optimizer state and training state.

    Every part of the header is checked: a file with a malformed header raises
    :class:`xbp.XbpFileError`, never a ``KeyError`` or ``TypeError``. ``argument``
    is the name error messages give the file.
    """
    meta, files = _read(path, argument)
    argument = name_file(argument, path)
    net = _build(meta, files, backend, device, argument)
    optimizer = state = None
    if "optimizer" in meta:
        try:
            optimizer = from_config(meta["optimizer"])
        except XbpFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise XbpFileError(
                f"{argument} has an invalid optimizer header ({type(exc).__name__}: {exc})"
            ) from None
        n = meta.get("optimizer_state_leaves")
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise XbpFileError(
                    f"{argument} has a corrupt header: optimizer_state_leaves is {n!r}"
                )
            try:
                leaves = [files[f"opt.{j}"] for j in range(n)]
            except KeyError:
                raise XbpFileError(f"{argument} lacks part of its optimizer state") from None
            be = net.backend
            try:
                state = state_from_host(
                    optimizer.init(net.params), leaves, lambda a, dt: be.asarray(a, dt, copy=True)
                )
            except XbpFileError as exc:
                raise XbpFileError(f"{argument}: {exc}") from None
    training = meta.get("training", {})
    _check_training(training, argument)
    return Checkpoint(net, optimizer, state, training, meta.get("metadata", {}))


def check_same_architecture(net: Network, other: Network, argument: str) -> None:
    """Refuse to continue ``net``'s run from a file with another architecture."""
    if net.config()["layers"] != other.config()["layers"] or net.loss.name != other.loss.name:
        raise XbpFileError(
            f"{argument} holds a {other.sizes} network ({other.loss.name}) but this run builds "
            f"{net.sizes} ({net.loss.name}); resume with the same --layers/--loss or start anew"
        )
