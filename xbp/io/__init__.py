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
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from ..errors import XbpError, XbpFileError, XbpTypeError, XbpValueError
from ..nn.activations import get_activation
from ..nn.losses import get_loss
from ..nn.network import Network
from ..optim import Optimizer, from_config, state_from_host, state_to_host
from .paths import (
    as_path,
    describe,
    input_file,
    new_file,
    new_file_mode,
    output_file,
    sniff,
    write_target,
)
from .paths import label as name_file
from .signals import terminate_as_interrupt

__all__ = ["save", "load", "load_checkpoint", "Checkpoint", "FORMAT_VERSION", "atomic_write"]

FORMAT = "xbp-model"
#: the model file format this xbp writes; a file from a newer format is refused
FORMAT_VERSION = 1


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Examples
    --------
    >>> import xbp
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> opt = xbp.optim.adam(1e-3)
    >>> _ = xbp.save(net, "model.npz", optimizer=opt, optimizer_state=opt.init(net.params))
    >>> ck = xbp.load_checkpoint("model.npz")  # a saved model: not resumable, but complete
    >>> ck.optimizer == opt, ck.network.config() == net.config(), ck.resumable
    (True, True, False)
    """

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

    Examples
    --------
    >>> import xbp
    >>> path = xbp.io.atomic_write("notes.txt", lambda f: f.write(b"all or nothing"))
    >>> path.name, open("notes.txt").read()
    ('notes.txt', 'all or nothing')
    """
    if not callable(write):
        raise XbpTypeError(f"write is a {type(write).__name__}; pass a function of a file object")
    given = as_path(path, argument)
    parent = output_file(given, argument)
    target = write_target(given)
    mode = new_file_mode(target)
    tmp: list[str] = []  # the temporary's name, known before the file exists (new_file)
    # SIGTERM mid-write is handled like Ctrl-C: the temporary goes, the old file stays
    with terminate_as_interrupt():
        try:
            # a short temporary name: a target name near the file system's limit must work
            fd = new_file(parent, f".{target.name[:32]}.", ".tmp", tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp[0], target)
        except BaseException as exc:
            for name in tmp:
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            if isinstance(exc, OSError):
                raise XbpFileError(
                    f"{argument}={str(given)!r} could not be written: {exc}"
                ) from None
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
    from .. import __version__

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
    meta["training"] = _arrays_out(meta["training"], arrays)
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

# how the JSON header refers to an array of the training state stored beside it
_ARRAY_REF = "__xbp_array__"


def _arrays_out(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` with each NumPy array in it (a callback's best weights) moved into
    ``arrays`` as ``train.N`` and replaced by a reference the header can hold."""
    if isinstance(obj, np.ndarray):
        key = f"train.{sum(k.startswith('train.') for k in arrays)}"
        arrays[key] = obj
        return {_ARRAY_REF: key}
    if isinstance(obj, dict):
        return {k: _arrays_out(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_arrays_out(v, arrays) for v in obj]
    return obj


def _arrays_in(obj: Any, files: dict[str, np.ndarray], argument: str, depth: int = 0) -> Any:
    """The inverse of :func:`_arrays_out` on a loaded header: every reference must name
    a numeric array of the file."""
    if depth > 64:
        raise XbpFileError(f"{argument} has a corrupt training state (nested too deeply)")
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_REF}:
            key = obj[_ARRAY_REF]
            array = files.get(key) if isinstance(key, str) and key.startswith("train.") else None
            if array is None or array.dtype.kind not in "fiu":
                raise XbpFileError(
                    f"{argument} has a corrupt training state: it refers to the array "
                    f"{key!r}, which the file does not hold as numbers; use a checkpoint "
                    "written by fit"
                )
            return array
        return {k: _arrays_in(v, files, argument, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays_in(v, files, argument, depth + 1) for v in obj]
    return obj


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


def _check_stored_shapes(layers: list[Any], files: dict[str, np.ndarray], argument: str) -> None:
    """Every parameter and state array the header's layers need is stored, with the
    shape they need: a header that claims huge layers is refused before a network of
    that size is built and initialised."""
    for i, layer in enumerate(layers):
        for kind, shapes in (("parameters", layer.param_shapes()), ("state", layer.state_shapes())):
            prefix = "param" if kind == "parameters" else "state"
            for key, shape in shapes.items():
                stored = files.get(f"{prefix}.{i}.{key}")
                if stored is None:
                    raise XbpFileError(f"{argument} lacks the {kind} of layer {i} ('{key}')")
                if tuple(stored.shape) != tuple(shape):
                    raise XbpFileError(
                        f"{argument} does not match its own architecture: its header gives "
                        f"layer {i} '{key}' the shape {tuple(shape)} but the file stores "
                        f"{tuple(stored.shape)}; the file was edited or damaged"
                    )


def _build(
    meta: dict[str, Any], files: dict[str, np.ndarray], backend: Any, device: Any, argument: str
) -> Network:
    _check_parts(meta.get("architecture") if isinstance(meta, dict) else None, argument)
    try:
        arch = meta["architecture"]
        layers = Network.layers_from_config(arch, f"{argument}'s architecture")
        # the header's sizes against the arrays stored, before anything is allocated
        _check_stored_shapes(layers, files, argument)
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
        if isinstance(exc, XbpFileError) or isinstance(exc, XbpError) and "backend" in str(exc):
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

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> _ = xbp.save(net, "xor.npz")
    >>> again = xbp.load("xor.npz", backend="numpy")
    >>> x, _ = xbp.data.make_xor()
    >>> bool(np.array_equal(again.predict(x), net.predict(x)))
    True
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
    "callback_types": (list,),
    "lr_scale": (int, float),
    "retries": (int,),
    "dropout_seed": (int,),
    "seed": (int,),
    "loss_scaler": (dict,),
}


def _training_problem(training: dict[str, Any]) -> str | None:
    """What is wrong with a loaded training state (None: nothing), checked before a
    network is built: every value resuming would use, with its type and range."""
    for key, types in _TRAINING_TYPES.items():
        if key not in training or training[key] is None and key not in ("epoch", "step"):
            continue
        value: Any = training[key]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"'{key}' is {value!r}"
        if key in ("epoch", "step", "retries", "seed") and isinstance(value, int) and value < 0:
            return f"'{key}' is {value!r}, a negative count"
    lr_scale: Any = training.get("lr_scale")
    # halvings after a divergence only ever lower the rate: 0 < scale <= 1; anything
    # else would train with a rate nobody chose (a negative one climbs the loss)
    if lr_scale is not None and not (math.isfinite(lr_scale) and 0 < lr_scale <= 1):
        return f"'lr_scale' is {lr_scale!r}, not a learning-rate factor in (0, 1]"
    seed: Any = training.get("dropout_seed")
    if seed is not None and not 0 <= seed < 2**32:
        return f"'dropout_seed' is {seed!r}, not a 32-bit seed"
    rng = training.get("rng")
    if rng is not None:
        try:  # the generator resuming restores: its own check of the state
            np.random.default_rng(0).bit_generator.state = rng
        except Exception as exc:  # numpy raises TypeError, ValueError or KeyError here
            return f"'rng' is not a random generator's state ({type(exc).__name__}: {exc})"
    history = training.get("history")
    if history is not None:
        epochs, diverged = history.get("epochs", []), history.get("diverged", [])
        if not isinstance(epochs, list) or not all(isinstance(r, dict) for r in epochs):
            return "'history' epochs are not a list of records"
        if not isinstance(diverged, list) or not all(isinstance(r, dict) for r in diverged):
            return "'history' divergences are not a list of records"
        if not isinstance(history.get("stopped_early", False), bool):
            return f"'history' stopped_early is {history['stopped_early']!r}"
    callbacks = training.get("callbacks")
    if callbacks is not None and not all(isinstance(c, dict) for c in callbacks):
        return "'callbacks' is not a list of callback states"
    names = training.get("callback_types")
    if names is not None and (
        not all(isinstance(n, str) for n in names) or len(names) != len(callbacks or [])
    ):
        return "'callback_types' does not name each saved callback state"
    scaler = training.get("loss_scaler")
    if scaler is not None:
        limits: dict[str, Any] = {"scale": 0.0, "growth_interval": 1, "good_steps": 0, "skipped": 0}
        for key, low in limits.items():
            found: Any = scaler.get(key, low if key != "scale" else 1.0)
            whole = isinstance(found, int) and not isinstance(found, bool)
            number = whole or (key == "scale" and isinstance(found, float))
            if not number or not math.isfinite(found) or found < low:
                return f"the fp16 loss scaler's '{key}' is {found!r}"
            if key == "scale" and found == 0:
                return f"the fp16 loss scaler's '{key}' is {found!r}"
    return None


def _check_training(training: dict[str, Any], argument: str) -> None:
    problem = _training_problem(training)
    if problem is not None:
        raise XbpFileError(
            f"{argument} has a corrupt training state: {problem}; the file was not written "
            "by xbp (or was edited or damaged); use a checkpoint written by fit"
        )


def load_checkpoint(
    path: str | os.PathLike[str], backend: Any = None, device: Any = None, *, argument: str = "path"
) -> Checkpoint:
    """Load a network with its optimizer, optimizer state and training state.

    Every part of the header is checked: a file with a malformed header raises
    :class:`xbp.errors.XbpFileError`, never a ``KeyError`` or ``TypeError``. ``argument``
    is the name error messages give the file.

    Examples
    --------
    >>> import xbp
    >>> x, y = xbp.data.make_xor()
    >>> net = xbp.mlp([2, 3, 1], loss="binary_cross_entropy", seed=0)
    >>> history = xbp.fit(net, x, y, epochs=2, batch_size=4, checkpoint="run.npz", progress=False)
    >>> ck = xbp.load_checkpoint("run.npz")
    >>> ck.resumable, ck.training["epoch"], ck.optimizer.name
    (True, 2, 'sgd')
    >>> history = xbp.fit(ck.network, x, y, epochs=4, batch_size=4, resume="run.npz",
    ...                   progress=False)
    >>> len(history)  # the resumed run's History holds all four epochs
    4
    """
    meta, files = _read(path, argument)
    argument = name_file(argument, path)
    training = _arrays_in(meta.get("training", {}), files, argument)
    _check_training(training, argument)  # before a network of the header's size exists
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
    return Checkpoint(net, optimizer, state, training, meta.get("metadata", {}))


def check_same_architecture(net: Network, other: Network, argument: str) -> None:
    """Refuse to continue ``net``'s run from a file with another architecture."""
    if net.config()["layers"] != other.config()["layers"] or net.loss.name != other.loss.name:
        raise XbpFileError(
            f"{argument} holds a {other.sizes} network ({other.loss.name}) but this run builds "
            f"{net.sizes} ({net.loss.name}); resume with the same --layers/--loss or start anew"
        )
