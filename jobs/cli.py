"""`rerank`: the one command-line entry point. A table of commands; each parses its flags (made
from its config's fields), logs its resolved config, runs, and returns an exit code through the
one exception-to-exit-code table in `jobs/entry.py`.

    rerank run INPUT OUTPUT --model M [flags]     score and re-sort every shard
    rerank nightly --date D --config C            a dated, scheduled run (one copy at a time)
    rerank finetune TRAIN OUTPUT --model M [flags]  fine-tune on Ray Train
    rerank demo                                   the job end to end on generated data
    rerank status OUTPUT [--input INPUT] [--json]   where the run of OUTPUT stands
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from jobs import demo, finetune, rerank, rerank_nightly, status
from jobs.entry import Command, add_console_flags, configure_logging, execute

# name -> (adds its sub-parser, runs it)
COMMANDS: dict[str, tuple[Callable[[Any], None], Command]] = {
    "run": (rerank.add_parser, rerank.command),
    "nightly": (rerank_nightly.add_parser, rerank_nightly.command),
    "finetune": (finetune.add_parser, finetune.command),
    "demo": (demo.add_parser, demo.command),
    "status": (status.add_parser, status.command),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    for command in sub.choices.values():
        add_console_flags(command)
    return parser


def take_late_positionals(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]
) -> None:
    """Optional positionals split by a flag (`finetune TRAIN --model M OUTPUT`): argparse (3.11 at
    least) takes both at TRAIN, the second empty, and leaves OUTPUT unrecognized. Such values fill
    the command's optional positionals still missing, in order; anything else is an error."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    missing = [a for a in command._actions if a.nargs == "?" and not a.option_strings and a.dest not in args]
    for value in extras:
        if value.startswith("-") or not missing:
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        setattr(args, missing.pop(0).dest, value)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    take_late_positionals(parser, args, extras)
    configure_logging(verbose=getattr(args, "verbose", False))
    return execute(COMMANDS[args.command][1], args)


if __name__ == "__main__":
    sys.exit(main())
