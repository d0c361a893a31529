"""The ``xbp`` command line: a shell that parses, calls the library and prints.

One module per command (``train``, ``evaluate``, ``predict``, ``export``, ``explain``,
``gradcheck``, ``summary``, ``backends``, ``bench``); ``options`` holds the defaults table
and the parser, ``common`` what several commands share (the files a command reads and
writes, loading data and models). Every rule a command applies is a library call.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
from collections.abc import Sequence

from ..errors import XbpError, spelled
from .backends import cmd_backends
from .bench import cmd_bench
from .evaluate import cmd_evaluate
from .explain import cmd_explain
from .export import cmd_export
from .gradcheck import cmd_gradcheck
from .options import FLAGS, build_parser, finish_args
from .predict import cmd_predict
from .summary import cmd_summary
from .train import cmd_train

COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "backends": cmd_backends,
    "summary": cmd_summary,
    "gradcheck": cmd_gradcheck,
    "explain": cmd_explain,
    "bench": cmd_bench,
}


def _quiet_broken_pipe() -> None:
    """The reader went away (``xbp predict ... | head``): no traceback, no flush error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured in-process)


def interrupted_message(
    args: argparse.Namespace, what: str = "interrupted", status: int = 130
) -> str:
    """What Ctrl-C (or SIGTERM) leaves behind: the exit status, the checkpoint to resume
    from and the command that does it, or that nothing resumable was written."""
    head = f"{what} (exit status {status})"
    if args.command != "train":
        return f"{head}; files written before it are whole"
    path = args.checkpoint if args.checkpoint is not None else args.resume
    from ..train.checkpoint import checkpoint_epoch

    epoch = None if path is None else checkpoint_epoch(path)
    if epoch is None:
        hint = " (pass --checkpoint FILE to make a run resumable)" if path is None else ""
        return f"{head}; no checkpoint was written{hint}"
    return (
        f"{head}; the checkpoint {path} holds epoch {epoch}: continue with "
        f"xbp train --resume {shlex.quote(str(path))}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``xbp`` command; returns the exit status (2 for a user error).

    Under ``--distributed`` the whole command, argument parsing included, runs
    through :func:`xbp.parallel.mpi.run_collectively`: a failure on one rank
    (a bad flag, missing data, an error after training) ends every rank.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    from ..parallel.mpi import parallel_launch

    found = parallel_launch()
    if found is not None and "--distributed" not in words:
        name, size = found
        print(
            f"xbp: error: running under {name} with {size} processes but without "
            "--distributed: each process would run its own copy of the command; add "
            "--distributed (xbp train), or start one process",
            file=sys.stderr,
        )
        return 2
    if "--distributed" in words:
        from ..parallel.mpi import run_collectively

        return run_collectively(_main, words)
    return _main(words)


def _import_plugins(argv: list[str]) -> list[str] | None:
    """Import every ``--import MODULE`` (anywhere in ``argv``) and return the other words.

    A module registers its own activations and losses on import
    (:func:`xbp.register_activation`, :func:`xbp.register_loss`), so a model
    built from them can be trained, saved and read from the shell. The current
    directory is searched first, as ``python -m`` does. None after a one-line
    error."""
    import importlib

    rest, modules = [], []
    words = iter(argv)
    for word in words:
        if word == "--import":
            module = next(words, None)
            if module is None or module.startswith("-"):
                print(
                    "xbp: error: --import needs a module name, e.g. --import myparts",
                    file=sys.stderr,
                )
                return None
            modules.append(module)
        elif word.startswith("--import="):
            modules.append(word.split("=", 1)[1])
        else:
            rest.append(word)
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the module's own failure, reported in one line
            print(
                f"xbp: error: --import {module}: {type(exc).__name__}: {' '.join(str(exc).split())}"
                " (give an importable module that registers your parts)",
                file=sys.stderr,
            )
            return None
    return rest


def _main(argv: list[str]) -> int:
    plain = _import_plugins(argv)
    if plain is None:
        return 2
    argv = plain
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    finish_args(args)
    from ..errors import Terminated
    from ..io.signals import terminate_as_interrupt

    try:
        # SIGTERM (a scheduler's preemption) takes Ctrl-C's clean-up path: a file being
        # written is left as it was, the last checkpoint stays whole and resumable
        with terminate_as_interrupt(), spelled(FLAGS):
            return COMMANDS[args.command](args)
    except XbpError as exc:
        if args.debug:
            raise
        # one line, even for multi-line reports
        print(f"xbp {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141  # as if killed by SIGPIPE, like other tools in a pipeline
    except Terminated:
        print(
            f"xbp {args.command}: {interrupted_message(args, 'terminated by SIGTERM', 143)}",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print(f"xbp {args.command}: {interrupted_message(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
