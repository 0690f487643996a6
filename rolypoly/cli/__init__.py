"""The ``rolypoly`` command (also ``python -m rolypoly.cli``, which is how torchrun starts training).

One module per group of commands, each owning its arguments and handlers
the same way: ``add_parser(sub)`` registers its subcommands, and each
subcommand's handler ``run_<command>(args) -> int`` is stored as
``args.run``. Options several commands share (``--gmd``, ``--agent``,
``--sessions``, ``--json``) come from :mod:`rolypoly.cli.common`.

=================  ===========================================================
module             commands
=================  ===========================================================
``demo``           demo
``live``           play, simulate, serve
``sessions``       session new|pattern|list|revert|export|run, finetune, plot
``groove``         humanize, groove humanize|drumify|infill|transfer, grooves list|subset
``training``       pretrain timing|groove, evaluate timing|groove, data gmd
``devices``        devices, onsets
``lab``            bench decide|onsets|finetune|output, experiment
=================  ===========================================================

Handlers import what they need when they run, so ``rolypoly --help`` is
instant. Problems the user can cause end as one line on stderr
(``rolypoly: <file>: <problem>``) and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from . import demo, devices, groove, lab, live, sessions, training
from .common import print_warnings

#: The command groups, in the order ``rolypoly --help`` lists them.
GROUPS = (demo, live, sessions, groove, training, devices, lab)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rolypoly",
        description="An adaptive drum machine that learns to sit in the pocket with you.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return p


def main(argv=None) -> int:
    from rolypoly.errors import RolypolyError

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            status = args.run(args)
        print_warnings(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        return status
    except RolypolyError as e:
        print(f"rolypoly: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the system refuses (a name too long, no space left): name it
        if isinstance(e, BrokenPipeError):
            return 0
        where = f"{e.filename}: " if e.filename else ""
        print(f"rolypoly: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rolypoly: stopped", file=sys.stderr)
        return 130
