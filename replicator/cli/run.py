"""``replicator run``: the long-running consumer, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal

from replicator.cli.common import (
    Subparsers,
    positive_int,
    positive_seconds,
    settings_from,
    tune_for_streaming,
    with_env,
)


def add_parser(sub: Subparsers) -> None:
    p = with_env(sub.add_parser("run", help="replicate until stopped (SIGTERM/SIGINT)"))
    p.add_argument(
        "--on-delete",
        choices=["delete", "ignore"],
        help="a source DELETE deletes the target row (default) or is ignored (audit tables)",
    )
    p.add_argument(
        "--on-truncate",
        choices=["ignore", "apply"],
        help="a source TRUNCATE is logged and counted (default) or empties the target",
    )
    p.add_argument(
        "--group-id",
        help="Kafka consumer group (default workflow-runs-replicator); its members share the"
        " partitions",
    )
    p.add_argument("--target-table", help="table to keep up to date (default workflow_runs)")
    p.add_argument(
        "--batch-max-rows",
        type=positive_int,
        help="most events in one applied batch (default 5000)",
    )
    p.add_argument(
        "--batch-max-ms",
        type=positive_int,
        help="longest an event waits in a batch while the apply is busy, in ms (default 100)",
    )
    p.add_argument(
        "--log-format", choices=["json", "human"], help="one JSON object per line (default) or text"
    )
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument(
        "--accept-gap",
        action="store_true",
        default=None,
        help="start a partition whose stored position the broker no longer holds (removed"
        " by retention) at the oldest offset it holds; run `verify --repair` first",
    )
    p.add_argument(
        "--exit-when-idle",
        type=positive_seconds,
        metavar="SECONDS",
        help="exit 0 once no event arrived for this long (one-shot catch-up), or at once"
        " when a cutover closed the stream (without it, `run` then stays up idle)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from replicator.dlq.state import counts as redriven_counts
    from replicator.observe import logs
    from replicator.stream.replicator import Replicator

    settings = settings_from(
        args,
        on_delete=args.on_delete,
        on_truncate=args.on_truncate,
        group_id=args.group_id,
        target_table=args.target_table,
        batch_max_rows=args.batch_max_rows,
        batch_max_ms=args.batch_max_ms,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        accept_gap=args.accept_gap,
    )
    logs.configure(settings.log_format, settings.log_level)
    dsn, table = settings.target_dsn.get_secret_value(), settings.target_table
    replicator = Replicator(settings, redriven=lambda: redriven_counts(dsn, table))

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("replicator").info(
            "stopping", extra={"signal": signal.Signals(signum).name}
        )
        replicator.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tune_for_streaming()
    return replicator.run(exit_when_idle_s=args.exit_when_idle)
