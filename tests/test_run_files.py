"""A run's files: the one output rule of fit and the CLI (memory maps count as inputs),
the run lock on checkpoint and log, SIGTERM handled like Ctrl-C, callbacks that start
afresh each run and whose whole state (best weights included) resumes exactly, and
damaged checkpoints refused before anything is built."""

from __future__ import annotations

import doctest
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKEND_SPECS, backend_or_skip, required_backends

import xbp
from xbp import optim
from xbp.errors import Terminated
from xbp.io.paths import RunLock

# numpy and one other library: the rules hold on both
TWO = [s for s in BACKEND_SPECS if s[0] in ("numpy", "torch-cpu")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=TWO, ids=[s[0] for s in TWO])
def be(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    return backend_or_skip(*request.param, required_backends())


def blobs() -> tuple[np.ndarray, np.ndarray]:
    return xbp.data.make_blobs(48, centers=3, n_features=4, seed=1)


def small(be: xbp.backends.select.Backend, seed: int = 0) -> xbp.Network:
    return xbp.mlp([4, 6, 3], activation="tanh", loss="cross_entropy", seed=seed, backend=be)


def same_weights(a: xbp.Network, b: xbp.Network) -> bool:
    return all(
        np.array_equal(p[k], q[k]) for p, q in zip(a.host_params(), b.host_params()) for k in p
    )


def test_paths_doctests() -> None:
    import xbp.io.paths
    import xbp.io.signals

    for module in (xbp.io.paths, xbp.io.signals):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0


# -- one output rule -------------------------------------------------------------------------
def test_fit_refuses_a_checkpoint_over_its_memory_mapped_input(tmp_path, be) -> None:
    """The issue's case: x memory-mapped from p, checkpoint=p. Every view of the map
    counts; the CLI's function (xbp.io.paths.check_files) decides, before any work."""
    x, y = blobs()
    p = tmp_path / "data.npy"
    np.save(p, x)
    before = p.read_bytes()
    xm = np.load(p, mmap_mode="r")
    views = {
        "memmap": xm,
        "slice": xm[4:],
        "asarray": np.asarray(xm),
        "mapped-rows": xbp.data.MappedRows(xm),
    }
    for name, view in views.items():
        yy = y[4:] if name == "slice" else y
        with pytest.raises(xbp.errors.XbpValueError, match="checkpoint .* is the same file as x"):
            xbp.fit(small(be), view, yy, epochs=1, batch_size=8, progress=False, checkpoint=p)
        assert p.read_bytes() == before, name
    ym = tmp_path / "y.npy"
    np.save(ym, y)
    cases = [
        dict(x=x, y=np.load(ym, mmap_mode="r"), checkpoint=ym, text="as y"),
        dict(x=x, y=y, validation_data=(np.load(p, mmap_mode="r"), y), checkpoint=p,
             text="as x_val"),
        dict(x=xm, y=y, callbacks=[xbp.CSVLogger(p)], text="CSVLogger path .* as x"),
        dict(x=xm, y=y, callbacks=[xbp.ModelCheckpoint(tmp_path / "." / "data.npy")],
             text="as x"),
    ]  # fmt: skip
    for case in cases:
        text = case.pop("text")
        with pytest.raises(xbp.errors.XbpValueError, match=text):
            xbp.fit(small(be), epochs=1, batch_size=8, progress=False, **case)
    assert p.read_bytes() == before
    # the rule's other side: a checkpoint elsewhere trains on the map, and a resumed run
    # keeps writing the checkpoint it resumes from
    ck = tmp_path / "ck.npz"
    xbp.fit(small(be), xm, y, epochs=1, batch_size=8, progress=False, checkpoint=ck)
    hist = xbp.fit(small(be), xm, y, epochs=2, batch_size=8, progress=False, checkpoint=ck,
                   resume=ck)  # fmt: skip
    assert len(hist) == 2 and p.read_bytes() == before


def test_fit_refuses_a_log_over_the_file_it_resumes_from(tmp_path) -> None:
    x, y = blobs()
    ck = tmp_path / "ck.npz"
    xbp.fit(small("numpy"), x, y, epochs=1, batch_size=8, progress=False, checkpoint=ck)
    before = ck.read_bytes()
    with pytest.raises(xbp.errors.XbpValueError, match="CSVLogger path .* the same file as resume"):
        xbp.fit(small("numpy"), x, y, epochs=2, batch_size=8, progress=False, resume=ck,
                callbacks=[xbp.CSVLogger(ck)])  # fmt: skip
    assert ck.read_bytes() == before


def test_cli_and_library_share_the_one_rule() -> None:
    """The CLI's output check is the library's function, not a copy."""
    import inspect

    from xbp import cli

    assert "check_files(" in inspect.getsource(cli.common.check_outputs)
    assert "check_files(" in inspect.getsource(xbp.train.run._check_run_files)


def test_csvlogger_never_replaces_a_file_that_is_not_its_log(tmp_path, be) -> None:
    x, y = blobs()
    foreign = {
        "data.csv": "a,b\n1,2\n",
        "notes.txt": "my notes, not a table",
        "other.csv": "epoch,foo\n1,2\n",
        "latin1.csv": "caf\xe9,1\n".encode("latin-1"),
    }
    for name, content in foreign.items():
        path = tmp_path / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        before = path.read_bytes()
        with pytest.raises(xbp.errors.XbpFileError, match="CSVLogger path"):
            xbp.fit(small(be), x, y, epochs=1, batch_size=8, progress=False,
                    callbacks=[xbp.CSVLogger(path)])  # fmt: skip
        assert path.read_bytes() == before, name
    # a CSVLogger's own log (even one a kill cut short) is replaced by a new run
    log = tmp_path / "log.csv"
    xbp.fit(small(be), x, y, epochs=3, batch_size=8, progress=False,
            callbacks=[xbp.CSVLogger(log)])  # fmt: skip
    with open(log, "a") as f:
        f.write("4,0.5")  # the partial row of a killed run
    xbp.fit(small(be), x, y, epochs=2, batch_size=8, progress=False,
            callbacks=[xbp.CSVLogger(log)])  # fmt: skip
    assert [r.split(",")[0] for r in log.read_text().splitlines()] == ["epoch", "1", "2"]


# -- the run lock ------------------------------------------------------------------------------
class _StartSecondRun(xbp.Callback):
    """At the first epoch's end, start a second run on the same files; keep its error."""

    def __init__(self, be, **files) -> None:
        self.be, self.files, self.error = be, files, None

    def on_epoch_end(self, trainer, logs) -> None:
        if self.error is None and logs["epoch"] == 1:
            x, y = blobs()
            try:
                xbp.fit(small(self.be), x, y, epochs=1, batch_size=8, progress=False,
                        **self.files)  # fmt: skip
            except xbp.errors.XbpFileError as exc:
                self.error = str(exc)


@pytest.mark.parametrize("which", ["checkpoint", "log"])
def test_a_second_run_on_the_same_checkpoint_or_log_is_refused(tmp_path, be, which) -> None:
    x, y = blobs()
    ck, log = tmp_path / "ck.npz", tmp_path / "log.csv"
    other = {"checkpoint": ck} if which == "checkpoint" else {"callbacks": [xbp.CSVLogger(log)]}
    second = _StartSecondRun(be, **other)
    xbp.fit(small(be), x, y, epochs=3, batch_size=8, progress=False, checkpoint=ck,
            callbacks=[xbp.CSVLogger(log), second])  # fmt: skip
    assert second.error is not None, "the second run was not refused"
    assert "is in use by another run" in second.error and f"process {os.getpid()}" in second.error
    assert "\n" not in second.error
    # the first run's files are its own: three epochs, in order, no row of the other
    assert xbp.load_checkpoint(ck).training["epoch"] == 3
    assert [r.split(",")[0] for r in log.read_text().splitlines()][1:] == ["1", "2", "3"]
    # the lock ends with the run: its file is gone and the next run may start
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")]
    xbp.fit(small(be), x, y, epochs=1, batch_size=8, progress=False, **other)


def test_lock_of_a_killed_run_is_released(tmp_path) -> None:
    """A lock file left by a SIGKILLed run does not block the next run."""
    ck = tmp_path / "ck.npz"
    code = (
        "import sys, time; from xbp.io.paths import RunLock\n"
        f"RunLock({{'checkpoint': {str(ck)!r}}}).acquire(); print('locked', flush=True); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    with pytest.raises(xbp.errors.XbpFileError, match=f"process {proc.pid} holds its lock"):
        RunLock({"checkpoint": ck}).acquire()
    proc.kill()
    proc.wait()
    assert Path(RunLock.lock_path(ck)).exists()  # stale, but no longer locked
    x, y = blobs()
    xbp.fit(small("numpy"), x, y, epochs=1, batch_size=8, progress=False, checkpoint=ck)
    assert not Path(RunLock.lock_path(ck)).exists()


TRAIN = ["train", "--data", "digits", "--layers", "24", "--batch-size", "32", "--optimizer",
         "momentum", "--quiet", "--seed", "3", "--backend", "numpy"]  # fmt: skip


def _xbp(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "xbp", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)  # fmt: skip


def test_two_cli_runs_started_together_do_not_interleave(tmp_path) -> None:
    ck, log = tmp_path / "ck.npz", tmp_path / "log.csv"
    args = TRAIN + ["--epochs", "150", "--checkpoint", str(ck), "--log-csv", str(log)]
    procs = [_xbp(args), _xbp(args)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "in use by another run" in refused and len(refused.strip().splitlines()) == 1
    epochs = [int(r.split(",")[0]) for r in log.read_text().splitlines()[1:]]
    assert epochs == list(range(1, 151))
    assert xbp.load_checkpoint(ck).training["epoch"] == 150


# -- SIGTERM like Ctrl-C --------------------------------------------------------------------
class _Signal(xbp.Callback):
    def __init__(self, at: int, sig: int = signal.SIGTERM) -> None:
        self.at, self.sig = at, sig

    def on_epoch_end(self, trainer, logs) -> None:
        if logs["epoch"] == self.at:
            # without a handler SIGTERM would end the test process itself: fail instead
            assert signal.getsignal(self.sig) is not signal.SIG_DFL, "SIGTERM is not handled"
            os.kill(os.getpid(), self.sig)
            time.sleep(1)  # the handler runs here


def _run(be, epochs, callbacks=(), **kw):
    x, y = blobs()
    net = small(be, seed=3)
    stop = xbp.EarlyStopping(patience=100, monitor="val_loss")
    hist = xbp.fit(net, x, y, epochs=epochs, batch_size=8, optimizer=optim.adam(0.05), seed=4,
                   validation_data=(x[::-1] * 0.5, (y + 1) % 3), progress=False,
                   callbacks=[stop, *callbacks], **kw)  # fmt: skip
    return net, hist, stop


def test_sigterm_in_fit_is_an_interrupt_and_the_run_resumes_exactly(tmp_path, be) -> None:
    full, full_hist, full_stop = _run(be, 8)
    ck = tmp_path / "ck.npz"
    with pytest.raises(Terminated):
        _run(be, 8, [_Signal(5)], checkpoint=ck)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    assert xbp.load_checkpoint(ck).training["epoch"] == 4  # epoch 5 never finished
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".tmp", ".lock")]
    resumed, hist, stop = _run(be, 8, checkpoint=ck, resume=ck)
    assert full_stop.best_epoch == stop.best_epoch and full_stop.best_epoch < 4
    assert [r["loss"] for r in hist.epochs] == [r["loss"] for r in full_hist.epochs]
    assert same_weights(resumed, full)  # the best weights of epoch < 4, restored


def test_a_program_s_own_sigterm_handler_is_kept(tmp_path) -> None:
    seen = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        _run("numpy", 3, [_Signal(2)])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == [signal.SIGTERM]


def test_sigterm_during_a_save_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    """In a child process (without the handler, SIGTERM kills it mid-write)."""
    target = tmp_path / "ck.npz"
    target.write_bytes(b"old checkpoint")
    code = textwrap.dedent(f"""
        import os, signal, sys
        from xbp.io import atomic_write
        def write(f):
            f.write(b"x" * 1_000_000)
            os.kill(os.getpid(), signal.SIGTERM)
            f.write(b"y" * 1_000_000)
        real_unlink = os.unlink
        def unlink(path):  # a second SIGTERM while the temporary is being removed
            os.kill(os.getpid(), signal.SIGTERM)
            real_unlink(path)
        os.unlink = unlink
        try:
            atomic_write({str(target)!r}, write)
        except KeyboardInterrupt as exc:
            print(type(exc).__name__)
            sys.exit(143)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 143 and proc.stdout.strip() == "Terminated", proc.stderr
    assert target.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


@pytest.mark.slow
def test_cli_sigterm_at_random_moments_exits_143_and_resumes_bit_identically(tmp_path) -> None:
    """Like the SIGKILL test, with SIGTERM: each run says so in one line with status 143,
    leaves no temporary file (a kill may), and the resumed run, early stopping's best
    weights included, saves exactly the model of an uninterrupted run."""
    ck = tmp_path / "ck.npz"
    args = TRAIN + ["--epochs", "400", "--early-stopping", "1000", "--checkpoint", str(ck)]
    rnd = random.Random(26)
    for _ in range(4):
        before = ck.stat().st_mtime_ns if ck.exists() else None
        proc = _xbp(args + (["--resume", str(ck)] if ck.exists() else []))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ck.exists() and ck.stat().st_mtime_ns != before:
                break
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.4))
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        err = proc.stderr.read().strip()
        assert err.startswith("xbp train: terminated by SIGTERM (exit status 143)"), err
        assert len(err.splitlines()) == 1
        assert not [p.name for p in tmp_path.iterdir() if p.name != "ck.npz"]
        xbp.load_checkpoint(ck)  # whole
    done = _xbp(args + ["--resume", str(ck), "--save", str(tmp_path / "a.npz")])
    assert done.wait(timeout=300) == 0, done.stderr.read()
    ref = _xbp(args[:-1] + [str(tmp_path / "ref.npz"), "--save", str(tmp_path / "b.npz")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    a, b = xbp.load(tmp_path / "a.npz"), xbp.load(tmp_path / "b.npz")
    assert same_weights(a, b)
    # early stopping restored an epoch before the last (else the test shows nothing)
    last = xbp.load_checkpoint(tmp_path / "ref.npz").network
    assert not same_weights(b, last)


def test_ctrl_c_during_the_cli_start_up_import_is_one_line(tmp_path) -> None:
    """The console script's launcher imports nothing heavy: an interrupt while xbp is
    being imported (raised here deterministically by an import hook) gives one line."""
    code = textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "xbp.nn.network":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        import xbp_start
        sys.argv = ["xbp", "backends"]
        sys.exit(xbp_start.main())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert (
        proc.stderr.strip() == "xbp: interrupted while starting (exit status 130); nothing was run"
    )
    # and a real SIGINT at moments of the import (once the launcher's handler is in place,
    # signalled by the blank line: a SIGINT before that is Python's own): one line
    launcher = textwrap.dedent("""
        import signal, sys, xbp_start
        # a terminal's default: a background job (CI) hands its children SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        install = signal.signal
        def installed(signum, handler):
            previous = install(signum, handler)
            if signum == signal.SIGINT and previous is signal.default_int_handler:
                print(flush=True)
            return previous
        signal.signal = installed
        sys.argv[1:] = ['backends']
        sys.exit(xbp_start.main())
    """)
    for delay in (0.0, 0.1, 0.3):
        p = subprocess.Popen([sys.executable, "-c", launcher], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline() == "\n"
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        rc, err = p.wait(timeout=120), p.stderr.read()
        assert "Traceback" not in err, err
        assert rc == 0 or (rc == 130 and len(err.splitlines()) == 1), (rc, err)


# -- callbacks: afresh each run, their whole state in checkpoints ----------------------------
def test_a_reused_early_stopping_never_copies_the_last_network_in(be) -> None:
    x, y = blobs()
    stop = xbp.EarlyStopping(patience=3)
    first = small(be, seed=0)
    xbp.fit(first, x, y, epochs=20, batch_size=8, optimizer=optim.adam(0.05), progress=False,
            callbacks=[stop], validation_split=0.25)  # fmt: skip
    # a worse second run: without a reset its val_loss never beats the first's best
    second, fresh = small(be, seed=1), small(be, seed=1)
    for net, cb in ((second, stop), (fresh, xbp.EarlyStopping(patience=3))):
        xbp.fit(net, x, y, epochs=1, batch_size=8, optimizer=optim.sgd(1e-4), progress=False,
                callbacks=[cb], validation_split=0.25)  # fmt: skip
    assert not same_weights(second, first)
    assert same_weights(second, fresh)
    assert stop.best_epoch == 1
    # another architecture: the old best weights would not even fit
    wide = xbp.mlp([4, 9, 3], loss="cross_entropy", seed=0, backend=be)
    xbp.fit(wide, x, y, epochs=1, batch_size=8, progress=False, callbacks=[stop])
    assert wide.params[0]["W"].shape == (4, 9)


def test_a_reused_best_only_checkpoint_writes_its_new_run(tmp_path) -> None:
    x, y = blobs()
    save = xbp.ModelCheckpoint(tmp_path / "best.npz", best_only=True, monitor="loss")
    xbp.fit(small("numpy"), x, y, epochs=10, batch_size=8, optimizer=optim.adam(0.05),
            progress=False, callbacks=[save])  # fmt: skip
    (tmp_path / "best.npz").unlink()
    xbp.fit(small("numpy", seed=5), x, y, epochs=1, batch_size=8, optimizer=optim.sgd(1e-4),
            progress=False, callbacks=[save])  # fmt: skip
    assert (tmp_path / "best.npz").exists()


class _Stop(xbp.Callback):
    """Ctrl-C at the end of an epoch (before the checkpoint of that epoch is written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer, logs) -> None:
        if logs["epoch"] == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("order", ["checkpoint-first", "checkpoint-last"])
def test_resume_restores_early_stopping_s_best_weights_exactly(tmp_path, be, order) -> None:
    """The best epoch lies before the interruption and is never beaten after it: the
    resumed run must end on that epoch's weights, as the uninterrupted run does."""
    full, full_hist, full_stop = _run(be, 8)
    ck = tmp_path / "ck.npz"
    save = xbp.ModelCheckpoint(ck)
    cbs = [save, _Stop(6)] if order == "checkpoint-first" else [_Stop(6), save]
    x, y = blobs()
    net = small(be, seed=3)
    stop = xbp.EarlyStopping(patience=100, monitor="val_loss")
    with pytest.raises(KeyboardInterrupt):
        # a user's ModelCheckpoint listed before EarlyStopping must still save its state
        xbp.fit(net, x, y, epochs=8, batch_size=8, optimizer=optim.adam(0.05), seed=4,
                validation_data=(x[::-1] * 0.5, (y + 1) % 3), progress=False,
                callbacks=[cbs[0], stop, cbs[1]])  # fmt: skip
    saved = xbp.load_checkpoint(ck).training
    assert saved["epoch"] == 5 and saved["callback_types"][1] == "EarlyStopping"
    resumed, hist, stop2 = _run(be, 8, [xbp.ModelCheckpoint(ck)], resume=ck)
    assert full_stop.best_epoch == stop2.best_epoch and full_stop.best_epoch < 5
    assert same_weights(resumed, full)


# -- damaged files ----------------------------------------------------------------------------
def test_a_header_claiming_huge_layers_allocates_nothing_of_that_size(tmp_path) -> None:
    path = tmp_path / "m.npz"
    xbp.save(xbp.mlp([3, 4, 2], seed=0), path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["architecture"]["layers"] = [[3, 4_000_000, "tanh"], [4_000_000, 2, "sigmoid"]]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    tracemalloc.start()
    try:
        with pytest.raises(xbp.errors.XbpFileError, match="its header gives layer 0 'W' the shape"):
            xbp.load(path)
        with pytest.raises(xbp.errors.XbpFileError, match="its header gives layer 0"):
            xbp.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak  # the claimed weights alone would be 96 MB


def _damaged(tmp_path: Path, change=None, arrays_change=None) -> Path:
    x, y = blobs()
    ck = tmp_path / "ck.npz"
    if not ck.exists():
        xbp.fit(small("numpy"), x, y, epochs=3, batch_size=8, optimizer=optim.adam(0.01),
                progress=False, checkpoint=ck, validation_split=0.25,
                callbacks=[xbp.EarlyStopping(patience=5)])  # fmt: skip
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    if change:
        change(meta["training"])
    if arrays_change:
        arrays_change(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = tmp_path / "bad.npz"
    np.savez(out, **arrays)
    return out


DAMAGE = [
    ("lr-negative", lambda t: t.update(lr_scale=-1.0), None, "'lr_scale' is -1.0"),
    ("lr-nan", lambda t: t.update(lr_scale=float("nan")), None, "'lr_scale' is nan"),
    ("lr-inf", lambda t: t.update(lr_scale=float("inf")), None, "'lr_scale' is inf"),
    ("lr-above-one", lambda t: t.update(lr_scale=4.0), None, "not a learning-rate factor"),
    ("lr-zero", lambda t: t.update(lr_scale=0), None, "'lr_scale' is 0"),
    ("rng-state", lambda t: t["rng"].update(state={"state": "x"}), None, "'rng' is not"),
    ("rng-generator", lambda t: t["rng"].update(bit_generator="MT19937"), None, "'rng' is not"),
    ("history-epochs", lambda t: t["history"].update(epochs=5), None, "'history' epochs"),
    ("history-rows", lambda t: t["history"].update(epochs=[1, 2]), None, "'history' epochs"),
    ("history-flag", lambda t: t["history"].update(stopped_early="no"), None, "stopped_early"),
    ("scaler-type", lambda t: t.update(loss_scaler=7), None, "'loss_scaler' is 7"),
    ("scaler-scale", lambda t: t["loss_scaler"].update(scale="x"), None, "'scale' is 'x'"),
    ("scaler-zero", lambda t: t["loss_scaler"].update(scale=0.0), None, "'scale' is 0.0"),
    ("scaler-negative", lambda t: t["loss_scaler"].update(scale=-2.0), None, "'scale' is -2.0"),
    ("scaler-interval", lambda t: t["loss_scaler"].update(growth_interval=0), None,
     "'growth_interval' is 0"),
    ("retries", lambda t: t.update(retries=-1), None, "'retries' is -1"),
    ("dropout-seed", lambda t: t.update(dropout_seed=2**40), None, "'dropout_seed'"),
    ("callbacks", lambda t: t.update(callbacks=[5]), None, "'callbacks' is not a list"),
    ("callback-types", lambda t: t.update(callback_types=["A"]), None, "'callback_types'"),
    ("stop-best", lambda t: t["callbacks"][0].update(best="low"), None,
     "EarlyStopping's saved best value is 'low'"),
    ("stop-wait", lambda t: t["callbacks"][0].update(wait=-3), None, "saved wait is -3"),
    ("stop-weights-ref", lambda t: t["callbacks"][0]["best_model"][0][0].update(
        W={"__xbp_array__": "train.99"}), None, "refers to the array 'train.99'"),
    ("stop-weights-shape", None, lambda a: a.update({"train.0": np.zeros((2, 2))}),
     "EarlyStopping's saved best weights[0]['W'] has shape (2, 2)"),
    ("stop-weights-nan", None, lambda a: a.update({"train.0": np.full_like(a["train.0"], np.nan)}),
     "best weights[0]['W'] holds NaN or Inf"),
    ("stop-weights-text", None, lambda a: a.update({"train.0": np.array(["a"])}),
     "does not hold as numbers"),
    ("optimizer-leaf-shape", None, lambda a: a.update({"opt.1": np.zeros((3, 3))}),
     "a saved optimizer array has shape (3, 3)"),
    ("optimizer-count", None, lambda a: a.update({"opt.0": np.zeros(4, np.int64)}),
     "a saved optimizer count"),
    ("optimizer-count-shape", None, lambda a: a.update({"opt.0": np.array([[1]])}),
     "a saved optimizer count"),
    ("optimizer-count-negative", None, lambda a: a.update({"opt.0": np.array(-5)}),
     "a saved optimizer count"),
    ("optimizer-leaf-text", None, lambda a: a.update({"opt.1": np.full((4, 6), "a")}),
     "holds <U1 values"),
]  # fmt: skip


@pytest.mark.parametrize("case", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_a_damaged_training_state_is_one_line_before_training(tmp_path, case, be) -> None:
    _, change, arrays_change, text = case
    bad = _damaged(tmp_path, change, arrays_change)
    before = bad.read_bytes()
    x, y = blobs()
    with pytest.raises(xbp.errors.XbpFileError) as info:
        xbp.fit(small(be), x, y, epochs=6, batch_size=8, optimizer=optim.adam(0.01),
                progress=False, resume=bad, validation_split=0.25,
                callbacks=[xbp.EarlyStopping(patience=5)])  # fmt: skip
    message = str(info.value)
    assert text in message and "\n" not in message and message.startswith("resume="), message
    assert bad.read_bytes() == before


def test_the_undamaged_checkpoint_resumes(tmp_path) -> None:
    """The damage table's control: the same file unedited resumes, on numpy and torch."""
    bad = _damaged(tmp_path)
    x, y = blobs()
    hist = xbp.fit(small("numpy"), x, y, epochs=6, batch_size=8, optimizer=optim.adam(0.01),
                   progress=False, resume=bad, validation_split=0.25,
                   callbacks=[xbp.EarlyStopping(patience=5)])  # fmt: skip
    assert len(hist) == 6


def test_a_sigterm_whose_exception_is_dropped_still_ends_the_run() -> None:
    """Python prints and drops an exception a signal handler raises inside a finalizer;
    the loop asks again at the next step, so the run ends instead of ignoring SIGTERM."""
    import os
    import signal

    from xbp.errors import Terminated

    seen = []

    class Swallow(xbp.Callback):
        def on_epoch_end(self, trainer, logs):  # type: ignore[no-untyped-def]
            if not seen:
                try:  # as a finalizer would: the handler's exception never gets out
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(1000):
                        pass
                except KeyboardInterrupt:
                    seen.append(trainer.epoch)

    x, y = xbp.data.make_blobs(n=64, seed=0)
    net = xbp.mlp([2, 4, 3], loss="cross_entropy")
    with pytest.raises(Terminated):
        xbp.fit(net, x, y, epochs=50, batch_size=8, callbacks=[Swallow()], progress=False)
    assert seen == [1]  # swallowed after epoch 1, and the run still ended
