"""The ``nnunet_dsmm`` command line: ``train``, ``status``, ``check``, ``synth``, ``convert-brats``,
``evaluate``, ``recover``, ``demo``, ``ablate`` and ``benchmark``. The parser is in
:mod:`nnunet_dsmm.cli.parser`, the commands in :mod:`nnunet_dsmm.cli.commands` and
:mod:`nnunet_dsmm.cli.training`."""

from __future__ import annotations

import os
import shlex
import sys
import traceback

from nnunet_dsmm.cli.parser import build_parser
from nnunet_dsmm.errors import DSMMError

#: exit statuses: an error of ours (bad input, a missing stage; argparse's usage errors too), an unexpected
#: error of the program, and a closed output pipe (as a process killed by SIGPIPE)
USER_ERROR, INTERNAL_ERROR, CLOSED_PIPE = 2, 3, 128 + 13


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand and return its exit status. An error of ours is printed as one message
    (exit 2); any other exception is an internal error (exit 3), its traceback shown with ``--debug``."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, not at interpreter exit
        return status
    except BrokenPipeError:  # e.g. `nnunet_dsmm check --json ... | head -1`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE
    except KeyboardInterrupt:
        print("nnunet-dsmm: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            traceback.print_exc()
        if isinstance(error, DSMMError):
            print(str(error), file=sys.stderr)
            return USER_ERROR
        first_line = next(iter(str(error).splitlines()), "")
        print(f"nnunet-dsmm: internal error ({type(error).__name__}: {first_line}); please report it with the output "
              f"of --debug: nnunet_dsmm --debug {shlex.join(argv)}", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
