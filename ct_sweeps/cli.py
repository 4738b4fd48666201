"""``ct-sweep``: run, resume, report and sync hyperparameter sweeps of counterfactual training.

    ct-sweep run SWEEP.yaml [--set k=v ...] [--address auto|ray://H:P|http://H:8265]
                            [--tracking-uri URI] [--storage RUN_DIR] [--name N] [--dry-run]
    ct-sweep resume RUN_DIR [--retry-errored]
    ct-sweep report RUN_DIR [--metric M] [--mode min|max]
    ct-sweep sync-mlflow RUN_DIR [--tracking-uri URI]

The same ``run`` command is the entrypoint of ``ray job submit --working-dir . -- ct-sweep run
SWEEP.yaml`` (it then joins the job's cluster). Bad input prints one ``error: ...`` per problem
and exits with code 2 before Ray starts; an interrupted sweep exits 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.cli import Parser, count_type
from ct_sweeps.run.cluster import set_defaults

if TYPE_CHECKING:
    from ct_sweeps.runner import Outcome

EXIT_BAD_INPUT = 2
EXIT_NO_SPACE = 75
"""The disk filled up (``ENOSPC``; 75 is ``EX_TEMPFAIL``: try again later): nothing finished is
lost, and ``ct-sweep resume RUN_DIR --retry-errored`` goes on once there is space."""
EXIT_INTERRUPTED = 130
NO_SPACE = "No space left on device"
ADDRESS_FORMS = (
    "auto, HOST:PORT (the GCS, e.g. 127.0.0.1:6379), ray://HOST:PORT (Ray client) or "
    "http://HOST:PORT (the dashboard: submit as a Ray job)"
)
_ADDRESS = re.compile(
    r"^(?:(ray|https?)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?$"
)
CONNECT_TIMEOUT_S = 3.0


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog="ct-sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", required=True)
    loud = "Ray Tune's status tables and Ray's log instead of one progress line"
    r = sub.add_parser("run", help="run a sweep file")
    r.add_argument("sweep", help="sweep YAML (see configs/quickstart.yaml)")
    over = "override: search.num_samples=20, space.generator.T=[5,10], train.epochs=5 ..."
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="K=V", help=over)
    addr = "join a Ray cluster (auto, HOST:PORT, ray://HOST:10001) or submit a Ray job to one"
    r.add_argument("--address", help=f"{addr} (http://HOST:8265)")
    uri = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a sqlite store in RUN_DIR)"
    r.add_argument("--tracking-uri", help=uri)
    where = "default ./ct_runs/<name>-<timestamp>, or $CT_RUNS_DIR/...; as the entrypoint of "
    where += "`ray job submit` (--address http://...), ~/ct_runs/... on the head node"
    r.add_argument("--storage", help=f"run directory ({where})")
    r.add_argument("--name", help="sweep name (overrides name: in the file)")
    r.add_argument(
        "--num-cpus", type=count_type(1), help="CPUs of the sweep's own Ray (default: all)"
    )
    r.add_argument("--dry-run", action="store_true", help="validate and count trials only")
    r.add_argument("--verbose", action="store_true", help=loud)
    s = sub.add_parser("resume", help="continue an interrupted sweep")
    s.add_argument("run_dir")
    s.add_argument("--address", help=addr)
    s.add_argument("--num-cpus", type=count_type(1))
    s.add_argument("--retry-errored", action="store_true", help="also rerun failed trials")
    s.add_argument("--verbose", action="store_true", help=loud)
    p = sub.add_parser("report", help="results table, best config, Pareto front of a run")
    p.add_argument("run_dir")
    p.add_argument("--metric", help="sort by this metric (default: the sweep's)")
    p.add_argument("--mode", choices=["min", "max"])
    p.add_argument("--top", type=count_type(1), default=10, help="rows to print")
    y = sub.add_parser("sync-mlflow", help="backfill MLflow from the run directory")
    y.add_argument("run_dir")
    y.add_argument("--tracking-uri")
    return ap


def _version() -> str:
    from importlib.metadata import version

    deps = ", ".join(f"{d} {version(d)}" for d in ("ray", "mlflow", "optuna", "torch"))
    return f"ct-sweep {version('ct')} ({deps})"


def _error(msg: str | Sequence[str]) -> int:
    for line in [msg] if isinstance(msg, str) else msg:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def check_address(address: str | None) -> None:
    """Fail fast, before Ray is imported, if ``--address`` is malformed or nothing answers there
    (Ray would wait a minute or more for an unreachable GCS, then end with a traceback)."""
    from ct_core.config import ConfigError

    if not address or address == "local":
        return
    target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    if target == "auto":
        return  # the cluster `ray start` last started here: Ray looks it up itself
    m = _ADDRESS.match(target)
    if m is None or (m.group(3) is None and m.group(1) not in ("http", "https")):
        raise ConfigError(f"--address must be {ADDRESS_FORMS}, got {address!r}")
    scheme, host, port_s = m.group(1), m.group(2).strip("[]"), m.group(3)
    port = int(port_s) if port_s else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise ConfigError(f"--address {address}: port must be in 1..65535, got {port}")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        where = f" ({target})" if target != address else ""
        raise ConfigError(
            f"--address {address}{where}: no Ray cluster answers at {host}:{port} ({why}); "
            "is it up (cluster/local.sh health)? --address takes " + ADDRESS_FORMS
        ) from None


def _mlflow_hint(uri: str | None, info: dict[str, Any]) -> str:
    """How to see the run in MLflow: the UI's command for a local store, and the link to the
    sweep's runs table (the experiment's "ct: <metric>" view)."""
    if not uri:
        return "MLflow: tracking disabled"
    local = uri.startswith("sqlite:") or "://" not in uri
    base = "http://127.0.0.1:5000" if local else uri.rstrip("/")
    out = f"MLflow UI:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
    out = out if local else ""
    if "experiment_id" in info:
        from ct_sweeps.record.mlflow_tracker import runs_link

        out += f"Runs:        {runs_link(base, info['experiment_id'], info.get('view'))}"
    if info.get("registered_model"):
        out += f"\nBest model:  models:/{info['registered_model']}@best"
    return out or f"MLflow:      {uri}"


def _files(rep: Any) -> None:
    print(f"Results:     {rep.results}")
    if rep.best:
        print(f"Best config: {rep.best}  (by {rep.metric}, {rep.mode})")
    if rep.pareto:
        print(f"Pareto:      {rep.pareto}")


def _info(run_dir: Path) -> dict[str, Any]:
    from ct_sweeps.plan import RUN_FILE

    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _summary(o: Outcome) -> int:
    from ct_sweeps.record.report import format_table

    rep, t = o.report, o.timings
    print(f"\n{format_table(rep.frame, rep.metric)}\n")
    print(
        f"Sweep finished {o.n_finished} of {o.n_expected} trials"
        f" ({o.n_errors} errors) in {o.seconds:.1f} s"
    )
    errs = rep.frame[rep.frame["status"] == "ERROR"] if len(rep.frame) else rep.frame
    for _, row in errs.head(5).iterrows():
        print(f"  trial {row['trial_id']} failed: {row['error']}")
    train = float(rep.frame["train_seconds"].sum()) if "train_seconds" in rep.frame else 0.0
    print(
        f"Time:        {o.seconds:.1f} s wall; {train:.1f} s of training epochs in all; "
        f"Ray start {t.get('ray_start', 0):.1f} s, stop {t.get('ray_stop', 0):.1f} s; "
        f"report {t.get('report', 0):.1f} s; MLflow in the driver "
        f"{t.get('mlflow_in_driver', 0):.1f} s"
    )
    print(f"Run dir:     {o.run_dir}")
    _files(rep)
    print(_mlflow_hint(o.tracking_uri, _info(o.run_dir)))
    if o.tracking_uri and not o.tracking_ok:
        print(
            "MLflow could not be reached during the sweep; backfill it with:  "
            f"ct-sweep sync-mlflow {o.run_dir}",
            file=sys.stderr,
        )
    if len(errs) and (
        errs["error"].astype(str).str.contains(NO_SPACE).any() or no_space_at(o.run_dir)
    ):
        return _no_space(o.run_dir)
    if o.interrupted:
        print(f"\nInterrupted. Continue with:  ct-sweep resume {o.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if o.n_expected and o.n_finished == 0 else 0


def _no_space(run_dir: Any) -> int:
    print(
        f"error: the disk of {run_dir} is full ({NO_SPACE}); what finished is kept. Free "
        f"space, then continue with:  ct-sweep resume {run_dir} --retry-errored",
        file=sys.stderr,
    )
    return EXIT_NO_SPACE


def disk_full(e: BaseException | None) -> bool:
    """Whether ``e`` or an exception it was raised from is a full disk (``ENOSPC``; Ray and
    Tune pass it on as text inside their own errors)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or NO_SPACE in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def no_space_at(folder: Any) -> bool:
    """Whether ``folder``'s file system refuses a small write for want of space (Tune may
    report a full disk as a damaged file of its own, not as ``ENOSPC``)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ct-space-")
    except OSError as e:
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        os.write(fd, b"\0" * 65536)
        os.fsync(fd)
    except OSError as e:
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        os.close(fd)
        os.unlink(tmp)
    return False


def _submit_job(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--address http://...``: run this same command as a Ray job on that cluster."""
    sweep, cwd = Path(args.sweep).resolve(), Path.cwd().resolve()
    if not sweep.is_relative_to(cwd):
        return _error(
            f"--address {args.address}: the sweep file must be inside the current "
            "directory, which is uploaded as the job's working dir"
        )
    rest, it = [], iter(argv)
    for a in it:
        if a == "--address":
            next(it, None)
        elif not a.startswith("--address="):
            rest.append(str(sweep.relative_to(cwd)) if a == args.sweep else a)
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    cmd = [ray_bin, "job", "submit", "--address", args.address, "--working-dir", "."]
    print("+ " + shlex.join([*cmd, "--", "ct-sweep", *rest]), flush=True)
    return subprocess.call([*cmd, "--", "ct-sweep", *rest])


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ct_sweeps.plan import check_inputs, check_storage, check_tracking_uri
    from ct_sweeps.plan import plan as make_plan

    sets = list(args.sets)
    if args.name:
        sets.append(f"name={args.name}")
    plan = make_plan(args.sweep, sets)
    check_tracking_uri(args.tracking_uri, "--tracking-uri")
    check_inputs(plan)
    storage = args.storage
    if not (args.address and args.address.startswith(("http://", "https://"))):
        # a Ray job makes its run directory on the cluster
        storage = str(check_storage(plan, args.storage))
        args.run_dir = storage
    what = f"{plan.sweep.search.algorithm}, {len(plan.space.entries)} swept parameters"
    print(f"Sweep {plan.sweep.name}: {plan.n_trials} trials ({what})", flush=True)
    if args.dry_run:
        for e in plan.space.entries:
            print(f"  {e.key}: {e.describe()}")
        return 0
    check_address(args.address)
    if args.address and args.address.startswith(("http://", "https://")):
        return _submit_job(args, argv)
    from ct_sweeps import runner

    kw = {"address": args.address, "tracking_uri": args.tracking_uri, "num_cpus": args.num_cpus}
    return _summary(runner.run(plan, storage=storage, verbose=args.verbose, **kw))


def _report(args: argparse.Namespace) -> int:
    from ct_sweeps.plan import RunDir
    from ct_sweeps.record.report import format_table, write_report

    run = RunDir.load(args.run_dir)
    rep = write_report(run, metric=args.metric, mode=args.mode)
    print(format_table(rep.frame, rep.metric, args.top))
    _files(rep)
    print(_mlflow_hint(run.info.get("tracking_uri"), run.info))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from ct_sweeps.plan import RunDir, check_tracking_uri

    check_tracking_uri(args.tracking_uri)

    run = RunDir.load(args.run_dir)  # bad input fails here, before Ray is imported
    from ct_sweeps.runner import sync

    try:
        counts = sync(run.path, args.tracking_uri)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"MLflow synced: {counts['created']} child runs created, {counts['metrics']} metric "
        f"values logged, {counts['status']} statuses set"
        + (", parent run created" if counts["parent_created"] else "")
    )
    print(_mlflow_hint(run.info.get("tracking_uri"), run.info))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    set_defaults(getattr(args, "address", None))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    from ct_core.config import ConfigError

    try:
        if args.command == "run":
            return _run(args, argv)
        if args.command == "resume":
            from ct_sweeps.runner import resume

            check_address(args.address)
            kw = {"address": args.address, "num_cpus": args.num_cpus, "verbose": args.verbose}
            return _summary(resume(args.run_dir, retry_errored=args.retry_errored, **kw))
        if args.command == "report":
            return _report(args)
        return _sync(args)
    except ConfigError as e:
        return _error(e.messages)
    except Exception as e:
        run_dir = getattr(args, "run_dir", None)
        if args.command in ("run", "resume") and (
            disk_full(e) or (run_dir and Path(run_dir).is_dir() and no_space_at(run_dir))
        ):
            return _no_space(run_dir or "RUN_DIR")
        raise
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    """The ``ct-sweep`` console script: :func:`main`, then an exit without the interpreter's
    teardown of torch, Ray, MLflow and pandas, which takes seconds on a small machine. When
    :func:`main` returns, Ray is stopped and the tracking thread has ended; the output streams
    and logging handlers are flushed here."""
    code = main()
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    entry()
