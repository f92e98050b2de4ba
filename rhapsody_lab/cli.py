"""The ``rhapsody-lab`` command: ``demo`` (and more verbs as the project grows)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the verb; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="rhapsody-lab", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser("demo", help="run a small heterogeneous workload and print "
                            "its statistics (no cluster, no GPU needed)")
    demo.add_argument("--tasks", type=int, default=200,
                      help="number of function tasks in the demo (default 200)")
    demo.add_argument("--report", default="rhapsody-demo-report.html",
                      help="where to write the demo's HTML report ('' for none)")
    report = verbs.add_parser("report", help="write a static HTML report of a session "
                              "journal (a finished, or killed, session)")
    report.add_argument("journal", help="the session's *.journal.jsonl file")
    report.add_argument("-o", "--output", default="report.html",
                        help="HTML file to write (default report.html)")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        from .demo import run_demo
        return run_demo(n_functions=args.tasks, report=args.report or None)
    if args.verb == "report":
        try:
            from .dashboard.report import main_report
        except ImportError as exc:
            print(f"rhapsody-lab report needs the dashboard extra: {exc}", file=sys.stderr)
            return 2
        return main_report(args.journal, args.output)
    parser.error(f"unknown verb {args.verb}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
