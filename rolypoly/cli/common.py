"""What several commands share: their common options, where sessions are, how things are printed.

Every option that more than one command takes is defined here once, so it
is spelled, defaulted and explained the same way everywhere. Nothing heavy
is imported at the top (``rolypoly --help`` builds every parser).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rolypoly import AGENT_KINDS


def add_gmd(parser, what: str = "") -> None:
    """``--gmd DIR``: the Groove MIDI Dataset folder (:func:`rolypoly.paths.gmd_dir` resolves it)."""
    parser.add_argument("--gmd", metavar="DIR",
                        help=f"Groove MIDI Dataset folder{f' for {what}' if what else ''} "
                             "(default $ROLYPOLY_GMD, else groove/ in the user data folder)")


def add_groove(parser, gmd: bool = True) -> None:
    """``--groove STYLE/N``: a drummer's beat from the groove library as the score (and ``--gmd DIR``).

    ``gmd=False`` where the command has its ``--gmd`` already (``session run``'s forgetting check).
    """
    parser.add_argument("--groove", metavar="STYLE/N",
                        help="play a drummer's beat from the groove library as the score, e.g. funk/118 "
                             "(rolypoly grooves list; from the dataset at --gmd when there is one)")
    if gmd:
        add_gmd(parser, "--groove (default: the subset shipped with rolypoly when there is no dataset)")


def groove_score(args, score) -> str | None:
    """The score file: ``score`` (a MIDI file given) or the file of ``--groove``; None when neither is given.

    Both given is a mistake, said in one line.
    """
    from rolypoly.errors import RolypolyError

    if score is not None and args.groove is not None:
        raise RolypolyError(f"give a score ({score}) or --groove {args.groove}, not both")
    if args.groove is None:
        return score
    from rolypoly.grooves import groove_path

    return str(groove_path(args.groove, args.gmd))


def add_agent(parser, *, default: str | None = None, required: bool = False, help: str | None = None) -> None:
    """``--agent KIND``: one of :data:`rolypoly.AGENT_KINDS`."""
    parser.add_argument("--agent", choices=AGENT_KINDS, default=default, required=required,
                        help=help or (f"timing agent (default {default})" if default else "timing agent"))


def add_json_out(parser, what: str = "the JSON") -> None:
    """``--json OUT``: also write the command's JSON report to a file (``args.json_out``)."""
    parser.add_argument("--json", dest="json_out", metavar="OUT", help=f"also write {what} here")


def add_sessions(parser, help: str = "sessions folder, where a session given by name is found "
                                     "(default $ROLYPOLY_SESSIONS, else ./sessions)") -> None:
    """``--sessions DIR``: the sessions folder (:func:`rolypoly.paths.sessions_dir` resolves it)."""
    parser.add_argument("--sessions", metavar="DIR", help=help)


def add_session(parser) -> None:
    """The positional ``SESSION`` (a folder, or a name in the sessions folder) and ``--sessions DIR``."""
    parser.add_argument("session", metavar="SESSION", help="session folder, or its name in the sessions folder")
    add_sessions(parser)


def session_folder(name, sessions=None) -> Path:
    """Where the session ``name`` is: a folder, or a name in the sessions folder.

    With ``sessions`` (``--sessions DIR``) a bare name is always ``DIR/name``;
    without it, a bare name that is not a folder here is looked up in
    :func:`rolypoly.paths.sessions_dir` and, when not there either, is a new
    folder here.

    Examples
    --------
    >>> str(session_folder("gig", "/tmp/sessions"))
    '/tmp/sessions/gig'
    >>> str(session_folder("a/b", "/tmp/sessions"))
    'a/b'
    """
    from rolypoly.paths import sessions_dir

    path = Path(name)
    if len(path.parts) != 1 or path.is_absolute():
        return path
    if sessions is not None:
        return sessions_dir(sessions) / name
    if not path.exists() and (sessions_dir() / name).exists():
        return sessions_dir() / name
    return path


def add_forgetting_check(parser, what: str = "fine-tuning's forgetting check") -> None:
    """``--gmd DIR`` and ``--no-dataset``: the GMD takes fine-tuning watches for forgetting."""
    add_gmd(parser, what)
    parser.add_argument("--no-dataset", action="store_true", help="skip the forgetting check on GMD")


def forgetting_check(args):
    """The GMD validation takes watched for forgetting (:func:`rolypoly.pretrain.gmd.forgetting_set`).

    None with ``--no-dataset``, or with a warning when the dataset is not there.
    """
    if args.no_dataset:
        return None
    from rolypoly.errors import DatasetError
    from rolypoly.pretrain.gmd import forgetting_set

    try:
        return forgetting_set(args.gmd)
    except DatasetError as e:
        print(f"rolypoly: warning: no forgetting check ({e}); pass --gmd DIR or --no-dataset", file=sys.stderr)
        return None


def print_warnings(lines) -> None:
    """One ``rolypoly: warning: ...`` line on stderr per warning."""
    for w in lines:
        print(f"rolypoly: warning: {w}", file=sys.stderr)


def print_report(report: dict, json_out=None) -> None:
    """A JSON report on stdout, and also in the file ``json_out`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


def print_take(summary: dict, indent: str = "") -> None:
    """What a take left behind: its folder, figures and files (problems as warnings)."""
    print(f"{indent}take written to {summary['take_dir']}: {summary['rows']} hits, "
          f"partner heard on {summary['hits_with_partner']}, deadline misses {summary['misses']}, "
          f"xruns {summary['xruns']}")
    for key in ("drums", "partner", "mix", "plot", "heard"):
        if key in summary:
            print(f"{indent}  {key:8s} {summary[key]}")
    print_warnings(summary.get("problems", []))
