"""``python -m medsemiseg.benchmark CONFIG.yaml [CONFIG.yaml ...]`` — run the grid(s), then write tables and plots.

Examples::

    python -m medsemiseg.benchmark configs/benchmark_covid_quick.yaml configs/benchmark_chase_quick.yaml
    python -m medsemiseg.benchmark configs/benchmark_covid.yaml --dry-run        # list the commands, run nothing
    python -m medsemiseg.benchmark configs/benchmark_covid.yaml --report-only    # re-make tables/plots from cells
    python -m medsemiseg.benchmark configs/benchmark_covid.yaml --methods supervised supmix_sufd --fractions 1/8
    python -m medsemiseg.benchmark configs/benchmark_covid.yaml --tracking mlflow   # each cell an MLflow run too

Rerunning the same command skips every finished cell (``done.json``) and retries failed or interrupted ones.
Exit status: 0 when every cell of the grid is finished, 1 when some failed (their ``failed.json`` says why),
2 for a configuration error (also: stale cells, a filter value the grid does not have, another runner holding the
grid's ``runner.lock``), 130 when interrupted (Ctrl-C; rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from medsemiseg.atomic_io import DiskFullError

from .cells import DONE, not_in_table, read_marker, stale_error
from .config import ConfigError, enumerate_cells, load_config
from .grid import grid_lock, run_cell, run_grid
from .report import make_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m medsemiseg.benchmark",
        description="Run a benchmark grid of MONAI bundle trainings (method x labelled fraction x seed), "
        "resumably, then write results.csv, results.md and plots.",
    )
    p.add_argument("configs", nargs="+", help="benchmark YAML file(s), e.g. configs/benchmark_covid_quick.yaml")
    p.add_argument("--output-dir", help="override the YAML's output_dir (one config only)")
    p.add_argument("--methods", nargs="+", help="run only these methods (the table still shows every finished one)")
    p.add_argument("--fractions", nargs="+", help="run only these labelled fractions, e.g. 1/8 full")
    p.add_argument("--seeds", nargs="+", type=int, help="run only these seeds")
    p.add_argument("--dry-run", action="store_true", help="print the cells and commands that would run, then stop")
    p.add_argument("--report-only", action="store_true", help="run nothing; rebuild tables and plots from the cells")
    p.add_argument("--no-report", action="store_true", help="do not write tables and plots after running")
    p.add_argument("--rerun-stale", action="store_true",
                   help="cells finished with a different command are moved aside (*.stale-N) and run again")
    p.add_argument("--no-rerun-failed", action="store_true", help="leave cells that failed before alone")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (plain lines only)")
    p.add_argument("--tracking", choices=["mlflow"],
                   help="log every finished cell as an MLflow run tagged set/method/fraction/seed (docs/tracking.md)")
    p.add_argument("--tracking-uri", help="MLflow store for --tracking (default: sqlite:///<output_dir>/mlruns.db)")
    p.add_argument("--experiment-name", default="medsemiseg-benchmark", help="MLflow experiment for --tracking")
    return p


def _exit_on_sigterm() -> None:
    """SIGTERM (``kill``) -> SystemExit in the main thread: ``subprocess.run`` then kills the running cell's bundle
    process instead of leaving it orphaned, and the cell keeps no marker, so the next run redoes (resumes) it."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass


def _check_filters(cfg, args) -> None:
    """A filter value the grid does not have (a typo, another grid's fraction) is an error, not an empty run."""
    cells = enumerate_cells(cfg)
    for name, given, have in (("--methods", args.methods, cfg.methods),
                              ("--fractions", args.fractions, [f.label for f in cfg.fractions]),
                              ("--seeds", args.seeds, cfg.seeds)):
        bad = [v for v in (given or []) if v not in have]
        if bad:
            raise ConfigError(f"{cfg.source}: {name} {' '.join(map(str, bad))} not in the grid; "
                              f"its values are {' '.join(map(str, have))}")
    if (args.methods or args.fractions or args.seeds) and not any(_matches(c, args) for c in cells):
        raise ConfigError(f"{cfg.source}: no cell of the grid matches --methods/--fractions/--seeds together "
                          "(e.g. the full-label column has supervised only)")


def _matches(cell, args) -> bool:
    return ((not args.methods or cell.method in args.methods)
            and (not args.fractions or cell.fraction.label in args.fractions)
            and (not args.seeds or cell.seed in args.seeds))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _exit_on_sigterm()
    try:
        return _main(args)
    except KeyboardInterrupt:
        # subprocess.run has killed and awaited the running cell's bundle process; its attempt's seconds are recorded
        print("\ninterrupted: rerun the same command to resume (finished cells are kept)", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    if args.output_dir and len(args.configs) > 1:
        print("error: --output-dir applies to one config only; give each YAML its own output_dir", file=sys.stderr)
        return 2
    try:
        cfgs = [load_config(c, output_dir=args.output_dir) for c in args.configs]
        for cfg in cfgs:
            _check_filters(cfg, args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def only(cell) -> bool:
        return _matches(cell, args)

    tracker = None
    if args.tracking and not args.dry_run:
        try:
            from .tracking import GridTracker

            tracker = GridTracker(args.tracking_uri, args.experiment_name)
        except ImportError as e:
            print(f"error: --tracking mlflow needs mlflow ({e}); pip install 'medsemiseg[tracking]'", file=sys.stderr)
            return 2

    def runner(cfg, cell):
        result = run_cell(cfg, cell)
        if tracker is not None and result.status == "done":
            tracker.log_cell(cfg, cell, read_marker(cell.directory / DONE) or {})
        return result

    n_failed = 0
    for cfg in cfgs:
        # one runner per grid folder: running cells (not a dry run, not --report-only) holds <task>/runner.lock
        locking = not args.dry_run and not args.report_only
        try:
            with grid_lock(cfg) if locking else contextlib.nullcontext():
                if not args.report_only:
                    results = run_grid(cfg, rerun_failed=not args.no_rerun_failed, rerun_stale=args.rerun_stale,
                                       dry_run=args.dry_run, progress=not args.no_progress, only=only,
                                       **({"runner": runner} if tracker is not None else {}))
                    failed = [r for r in results if r.status == "failed"]
                    n_failed += len(failed)
                    for r in failed:
                        print(f"[benchmark] FAILED {r.cell.key}: {r.message}", file=sys.stderr)
                    if args.dry_run:
                        continue
                elif args.dry_run:  # --dry-run --report-only: say what the report would hold, write nothing
                    error = stale_error(cfg, what="--report-only would not write the report.")
                    if error is not None:
                        raise error
                    print(f"[benchmark] {cfg.task}: would write results.csv, summary.csv, results.md and plots "
                          f"into {cfg.task_dir} (dry run: nothing written)")
                if tracker is not None:  # cells finished before this run (or by --report-only) too
                    logged = tracker.log_grid(cfg)
                    print(f"[benchmark] {cfg.task}: {logged} more cell(s) logged to MLflow "
                          f"({tracker.tracking_uri or cfg.output_dir / 'mlruns.db'}, experiment {tracker.experiment_name})")
                if args.report_only:
                    for line in not_in_table(cfg):
                        print(f"[benchmark] {cfg.task}: not in the table: {line}")
                if not args.no_report and not args.dry_run:
                    written = make_report(cfg)
                    for name, path in written.items():
                        print(f"[benchmark] {cfg.task}: {name} -> {path}")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except DiskFullError as e:  # a marker, table or figure that did not fit: names the file and the fix
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
