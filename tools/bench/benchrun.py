"""What every benchmark here shares: its failure, its log line, its common
options, and the run that removes everything it made, on failure and on
Ctrl-C too."""

import argparse
import os
import shutil
import signal
import subprocess
import sys


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def arg_parser(description, build_help):
    """The benchmark's options, starting with --build, which each takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--build", required=True, help=build_help)
    return p


def add_switchd_arg(p, example):
    """--switchd-arg, repeated: options passed to switchd as they are."""
    p.add_argument("--switchd-arg", dest="switchd_args", action="append", default=[],
                   help="one more switchd option (repeat: %s)" % example)


def parse(p, json_name):
    """Adds --json (default BUILD/json_name), the last option, and parses."""
    p.add_argument("--json", default=None, help="write the results here (default BUILD/%s)" % json_name)
    a = p.parse_args()
    if a.json is None:
        a.json = os.path.join(a.build, json_name)
    return a


def run(tools, make_bench, print_table, log_path, log_lines=None):
    """Checks `tools` are on PATH, runs make_bench().main() and prints its
    report; on a failure prints the switchd log at log_path(bench) (its last
    log_lines lines, or all). Always calls bench.teardown(). Returns the exit
    code: 0, 1 failed, 2 a tool is missing, 130 interrupted."""
    for tool in tools:
        if not shutil.which(tool):
            print("bench: %s not found" % tool, file=sys.stderr)
            return 2
    b = make_bench()

    def on_signal(sig, _):
        raise KeyboardInterrupt
    # Set both: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        print_table(b.main())
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        rc = 130
    except (Failure, subprocess.TimeoutExpired, OSError) as e:
        print("bench: %s" % e, file=sys.stderr)
        path = log_path(b)
        if path and os.path.exists(path):
            lines = open(path).readlines()
            what = "last lines" if log_lines and len(lines) > log_lines else "whole"
            print("---- switchd log (%s)\n%s" % (what, "".join(lines[-log_lines:] if log_lines else lines)),
                  file=sys.stderr)
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        b.teardown()
    return rc
