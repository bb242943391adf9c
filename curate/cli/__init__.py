"""The ``curate`` command line: each verb is declared once (``declare.Verb``, in the module of
its group) and both its subparser and its dispatch come from that declaration.

Errors the user can act on (``CurateError``) print as ``curate VERB: message`` and exit 2; an
interrupt exits 130 (run the verb again to resume); a closed stdout (``curate info | head -1``)
ends quietly, as other Unix tools do.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from curate.cli import maps, outputs, passes, pool, select
from curate.cli.declare import Verb, VerbParser
from curate.errors import CurateError

VERBS: tuple[Verb, ...] = (*pool.VERBS, *passes.VERBS, *select.VERBS, *maps.VERBS,
                           *outputs.VERBS)
SIGPIPE_STATUS = 128 + 13  # what a shell reports for a tool ended by SIGPIPE
# what the machine refused, with what to do; every write is atomic, so nothing is left half made
RESOURCE_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "over the disk quota",
    errno.EFBIG: "a file grew past the allowed size (ulimit -f)",
    errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "a name is too long",
    errno.EMFILE: "too many open files (ulimit -n)"}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb in ``VERBS``; a verb's options are added when it is used."""
    ap = argparse.ArgumentParser(prog="curate", description="Curate image-text pair datasets.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=VerbParser)
    for verb in VERBS:
        sub.add_parser(verb.name, help=verb.help, description=verb.description or verb.help,
                       verb=verb)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the verb and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args._run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except CurateError as e:
        print(f"curate {args.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away: point stdout at /dev/null so the exit's flush is quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except OSError as e:
        if e.errno not in RESOURCE_ERRORS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"curate {args.command}: {e.strerror or RESOURCE_ERRORS[e.errno]}{where}: "
              f"{RESOURCE_ERRORS[e.errno]}; nothing half-written was kept, and a rerun "
              "resumes", file=sys.stderr)
        return 2
    except Exception as e:
        if not type(e).__module__.startswith(("pyarrow", "duckdb", "_duckdb")):
            raise
        # a damaged file met where no check caught it: still one line, and where to look
        print(f"curate {args.command}: {type(e).__name__}: {str(e).splitlines()[0][:300]} "
              f"(`curate verify -w WS` finds damaged files)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    return status or 0
