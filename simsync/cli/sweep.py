"""``simsync sweep``: a slot range split into jobs (crossed with program builds), run by worker
processes of this machine (``--workers``) or of a Dask cluster (``--scheduler``).

Writes into ``--output-dir``: one run output file per job (``NNN-START-END.json``, or
``NNN-BUILD-START-END.json`` with builds), ``summary.json`` (every job, its file, attempts and
totals, in job order), and with several builds ``compare.txt`` (the table across builds) plus
``compare-BUILD.txt`` (``simsync compare`` of the first build against each other one).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import simsync
from simsync.cli import report
from simsync.cli.run import read_elf
from simsync.sweep import (
    API_KEY_ENV,
    ProgressBar,
    SweepJob,
    SweepJobFailed,
    jobs_for_builds,
    jobs_for_range,
    sweep,
)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``sweep`` on the ``simsync`` subparsers (reuses the argument types of
    ``simsync.cli``)."""
    from simsync import cli

    parser = sub.add_parser(
        "sweep", parents=[common], help="run a slot range as many jobs, on local worker "
                                        "processes or a Dask cluster",
        epilog="Writes one run output file per job, summary.json, and with several "
               "--program-so builds compare.txt. Progress (jobs done) goes to stderr. "
               f"With --scheduler the workers read the API key from their own ${API_KEY_ENV}.")
    cli._endpoint(parser)
    parser.add_argument("--start-slot", type=cli._slot, required=True, metavar="S",
                        help="first slot")
    parser.add_argument("--end-slot", type=cli._slot, required=True, metavar="E",
                        help="last slot (inclusive)")
    parser.add_argument("--split", type=cli._positive, default=1, metavar="N",
                        help="jobs per build: the range cut into N contiguous parts "
                             "(default: 1)")
    parser.add_argument("--program-id", type=cli._pubkey, metavar="P",
                        help="program to watch (default: the System program) and to override")
    parser.add_argument("--program-so", action="append", default=[], type=cli._elf_file,
                        metavar="FILE",
                        help="a build to install at --program-id (repeat for several; the "
                             "first is the baseline of the comparison)")
    parser.add_argument("--extra-compute-units", type=cli._slot, metavar="N",
                        help="added to every transaction's compute-unit limit")
    parser.add_argument("--subscriptions", type=cli._subscriptions, default=["transactions"],
                        metavar="KINDS", help="comma list of transactions,account-diff")
    parser.add_argument("--advance-count", type=cli._positive, default=10, metavar="N",
                        help="blocks per step (default: 10)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="a Dask scheduler (tcp://HOST:8786); needs simsync[dask]")
    where.add_argument("--workers", type=cli._positive, metavar="K",
                       help="local worker processes (default: the number of CPUs, at most "
                            "one per job)")
    parser.add_argument("--retries", type=cli._slot, default=1, metavar="R",
                        help="further runs of a job whose worker died or whose session failed "
                             "transiently (default: 1)")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="where the files go (created if missing; files are replaced)")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors argparse cannot see (exits 2 through ``parser.error``)."""
    if args.start_slot > args.end_slot:
        parser.error("--start-slot is after --end-slot")
    if args.program_so and not args.program_id:
        parser.error("--program-so needs --program-id (where to install it)")
    labels = [os.path.basename(path) for path in args.program_so]
    if len(set(labels)) != len(labels):
        parser.error("two --program-so files have the same name")
    if args.scheduler and args.api_key:     # called before the $SIMULATOR_API_KEY default
        parser.error(f"--api-key cannot go to Dask workers: set ${API_KEY_ENV} in the workers' "
                     "environment")


def build_jobs(args: argparse.Namespace, url: str) -> List[SweepJob]:
    create: Dict[str, Any] = {}
    if args.extra_compute_units is not None:
        create["extra_compute_units"] = args.extra_compute_units
    common: Dict[str, Any] = {"url": url, "subscriptions": tuple(args.subscriptions),
                              "advance_count": args.advance_count, "create": create}
    if not args.program_so:
        return jobs_for_range(args.start_slot, args.end_slot, args.split,
                              program_id=args.program_id, **common)
    # Read here: the workers get the bytes (a Dask worker may be on a machine without them).
    builds = {os.path.basename(path): read_elf(path) for path in args.program_so}
    return jobs_for_builds(args.start_slot, args.end_slot, builds, args.split,
                           program_id=args.program_id, **common)


def file_name(index: int, job: SweepJob) -> str:
    build = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', job.build)}-" if job.build else ""
    return f"{index:03d}-{build}{job.start_slot}-{job.end_slot}.json"


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Any]:
    if not args.scheduler:
        yield None
        return
    try:
        import distributed
    except ImportError as exc:
        raise simsync.SimsyncError(f"--scheduler needs Dask ({exc}): "
                                   "pip install 'simsync[dask]'") from None
    with distributed.Client(args.scheduler, timeout="30s") as client:  # type: ignore[no-untyped-call]
        yield client


def cmd_sweep(args: argparse.Namespace, client: simsync.Client) -> int:
    """Run the sweep; 0 when every job completed, 1 when some failed (each one named)."""
    jobs = build_jobs(args, client.url)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.api_key and not args.scheduler:
        os.environ[API_KEY_ENV] = args.api_key      # spawned local workers inherit it
    entries: Dict[int, Dict[str, Any]] = {}
    docs: Dict[int, report.Json] = {}
    workers = args.workers or min(len(jobs), os.cpu_count() or 1)
    bar = sys.stderr.isatty()    # else one plain line per job (logs, pipes)
    with _executor(args) as executor:
        where = (f"Dask scheduler {args.scheduler}" if executor else
                 f"{workers} local worker process{'es' if workers > 1 else ''}")
        print(f"simsync sweep: {len(jobs)} jobs on {where}", file=sys.stderr, flush=True)
        outcomes = sweep(jobs, executor=executor, retries=args.retries,
                         workers=None if executor else workers, progress=bar)
        for outcome in outcomes:
            entry: Dict[str, Any] = {"index": outcome.index,
                                     "start_slot": outcome.job.start_slot,
                                     "end_slot": outcome.job.end_slot,
                                     "build": outcome.job.build,
                                     "attempts": outcome.attempts}
            if isinstance(outcome, SweepJobFailed):
                entry.update(status="failed", file=None,
                             error=f"{type(outcome.cause).__name__}: {outcome.cause}")
                line = f"simsync sweep: {outcome}"
            else:
                name = file_name(outcome.index, outcome.job)
                report.write(outcome.value, os.path.join(args.output_dir, name))
                docs[outcome.index] = outcome.value
                entry.update(status="ok", file=name, error=None,
                             summary=outcome.value.get("summary"))
                line = (f"simsync sweep: job {outcome.index} (slots {outcome.job.label}) done "
                        f"in {outcome.attempts} attempt{'s' if outcome.attempts > 1 else ''}: "
                        f"{name}")
            entries[outcome.index] = entry
            if bar and isinstance(outcome, SweepJobFailed):
                ProgressBar.write(line, file=sys.stderr)
            elif not bar:
                print(f"{line} [{len(entries)}/{len(jobs)}]", file=sys.stderr, flush=True)
    failed = [e for e in entries.values() if e["status"] == "failed"]
    summary = {"start_slot": args.start_slot, "end_slot": args.end_slot,
               "program_id": args.program_id,
               "builds": [os.path.basename(path) for path in args.program_so],
               "jobs": [entries[i] for i in sorted(entries)],
               "totals": report.totals(r for d in docs.values() for r in d["transactions"]),
               "failed_jobs": len(failed)}
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=1)
        out.write("\n")
    for line in summary_lines(jobs, docs, failed):
        print(line)
    if len(args.program_so) > 1:
        lines = compare_builds(jobs, docs, args.output_dir)
        with open(os.path.join(args.output_dir, "compare.txt"), "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        for line in lines:
            print(line)
    print(f"wrote {len(docs)} job files and summary.json to {args.output_dir}")
    if failed:
        raise simsync.SimsyncError(f"{len(failed)} of {len(jobs)} jobs failed (see "
                                   "summary.json)")
    return 0


def summary_lines(jobs: Sequence[SweepJob], docs: Dict[int, report.Json],
                  failed: Sequence[Dict[str, Any]]) -> List[str]:
    count = report.totals(r for d in docs.values() for r in d["transactions"])
    slots = sum(job.slots for i, job in enumerate(jobs) if i in docs)
    return [f"jobs: {len(jobs)} ({len(docs)} completed, {len(failed)} failed); "
            f"{slots} slots; transactions: {count['total']} ({count['successes']} succeeded, "
            f"{count['failures']} failed)"]


def merged(jobs: Sequence[SweepJob], docs: Dict[int, report.Json],
           build: Optional[str]) -> Tuple[report.Json, int]:
    """Every completed job of ``build`` as one output document, and how many jobs it holds."""
    indexes = [i for i, job in enumerate(jobs) if job.build == build and i in docs]
    records = sorted((r for i in indexes for r in docs[i]["transactions"]),
                     key=lambda r: r["slot"])
    measured = all(report.token_changes_measured(docs[i]) for i in indexes)
    return ({"metadata": {"token_changes_measured": measured}, "transactions": records},
            len(indexes))


def compare_builds(jobs: Sequence[SweepJob], docs: Dict[int, report.Json],
                   output_dir: str) -> List[str]:
    """The table across builds (the first is the baseline); writes ``compare-BUILD.txt``."""
    builds: List[str] = []
    for job in jobs:
        if job.build is not None and job.build not in builds:
            builds.append(job.build)
    base, _ = merged(jobs, docs, builds[0])
    base_by = {r["signature"]: r for r in base["transactions"]}
    base_net = report.net_changes(base)
    lines = [f"{'BUILD':<24} {'JOBS':>4} {'TRANSACTIONS':>12} {'SUCCEEDED':>9} {'FAILED':>6} "
             f"{'REGRESSIONS':>11} {'IMPROVEMENTS':>12} {'BALANCE DIFFS':>13}"]
    for build in builds:
        doc, count = merged(jobs, docs, build)
        totals = report.totals(doc["transactions"])
        pairs = [(base_by[r["signature"]]["success"], r["success"])
                 for r in doc["transactions"] if r["signature"] in base_by]
        net = report.net_changes(doc)
        differ = sum(1 for a in set(base_net) | set(net) if base_net.get(a, 0) != net.get(a, 0))
        name = build + (" (base)" if build == builds[0] else "")
        lines.append(f"{name:<24} {count:>4} {totals['total']:>12} {totals['successes']:>9} "
                     f"{totals['failures']:>6} {pairs.count((True, False)):>11} "
                     f"{pairs.count((False, True)):>12} {differ:>13}")
        if build != builds[0]:
            detail = report.compare(base, doc, "all")
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", build)
            with open(os.path.join(output_dir, f"compare-{safe}.txt"), "w",
                      encoding="utf-8") as out:
                out.write(f"BASE {builds[0]}  EXP {build}\n" + "\n".join(detail) + "\n")
    return lines
