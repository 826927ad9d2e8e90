"""``replicator run``: the long-running consumer, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal

from replicator.cli.common import Subparsers, settings_from, with_env


def add_parser(sub: Subparsers) -> None:
    p = with_env(sub.add_parser("run", help="replicate until stopped (SIGTERM/SIGINT)"))
    p.add_argument("--on-delete", choices=["delete", "ignore"])
    p.add_argument("--on-truncate", choices=["ignore", "apply"])
    p.add_argument("--group-id")
    p.add_argument("--target-table")
    p.add_argument("--batch-max-rows", type=int)
    p.add_argument("--batch-max-ms", type=int)
    p.add_argument("--log-format", choices=["json", "human"])
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once no event arrived for this long (one-shot catch-up)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
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
    )
    logs.configure(settings.log_format, settings.log_level)
    replicator = Replicator(settings)

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("replicator").info(
            "stopping", extra={"signal": signal.Signals(signum).name}
        )
        replicator.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return replicator.run(exit_when_idle_s=args.exit_when_idle)
