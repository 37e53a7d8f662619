"""``keel jobs`` (inspect and operate the queue) and ``keel worker`` (run one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from keel.cli._common import Column, JsonOption, database, fail, out, print_items, print_json, run
from keel.clock import SYSTEM_CLOCK
from keel.errors import KeelError
from keel.jobs import queue
from keel.jobs.connector import JobRecord
from keel.jobs.runtime import worker_config
from keel.jobs.states import JobState
from keel.jobs.worker import parse_queues
from keel.settings import Settings
from keel.workerd import HttpPort, WorkerSupervisor, parse_range, run_worker, scale_policy

app = typer.Typer(help="Inspect and operate the background job queue.", no_args_is_help=True)
dead_app = typer.Typer(help="The dead-letter queue: jobs that ran out of attempts.")
app.add_typer(dead_app, name="dead")

StateOption = typer.Option(None, "--state", help="Only jobs in this state.")
QueueOption = typer.Option(None, "--queue", help="Only jobs of this queue.")
LimitOption = typer.Option(50, "--limit", min=1, max=10000, help="At most this many jobs.")


def job_dict(job: JobRecord, *, full: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": job.id,
        "queue": job.queue,
        "job_type": job.job_type,
        "state": job.state,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at.isoformat(),
        "last_error": job.last_error,
    }
    if full:
        item.update(
            payload=job.payload,
            unique_key=job.unique_key,
            lease_owner=job.lease_owner,
            lease_expires_at=job.lease_expires_at.isoformat() if job.lease_expires_at else None,
            trace_context=job.trace_context,
            created_at=job.created_at.isoformat(),
            started_at=job.started_at.isoformat() if job.started_at else None,
            finished_at=job.finished_at.isoformat() if job.finished_at else None,
        )
    return item


def _state(value: str | None) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState(value)
    except ValueError:
        fail(f"state must be one of {', '.join(JobState)}")


async def _list(state: JobState | None, queue_name: str | None, limit: int) -> list[dict[str, Any]]:
    async with database() as db, db.read() as session:
        rows = await queue.list_jobs(session, state=state, queue=queue_name, limit=limit)
        return [job_dict(job) for job in rows]


_JOB_COLUMNS: dict[str, Column] = {
    "id": "id",
    "queue": "queue",
    "type": "job_type",
    "state": "state",
    "attempt": lambda job: f"{job['attempt']}/{job['max_attempts']}",
    "run_at": "run_at",
    "last_error": lambda job: (job["last_error"] or "")[:60],
}


def _print_jobs(items: list[dict[str, Any]], as_json: bool) -> None:
    print_items(items, _JOB_COLUMNS, as_json=as_json)


@app.command("list")
def list_command(
    state: str | None = StateOption,
    queue_name: str | None = QueueOption,
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """List jobs, newest first."""
    items = run(lambda: _list(_state(state), queue_name, limit))
    _print_jobs(items, as_json)


async def _show(job_id: str) -> dict[str, Any]:
    async with database() as db, db.read() as session:
        return job_dict(await queue.get(session, job_id), full=True)


@app.command("show")
def show(job_id: str, as_json: bool = JsonOption) -> None:
    """Show one job in full."""
    item = run(lambda: _show(job_id))
    if as_json:
        print_json(item)
        return
    for key, value in item.items():
        out.print(f"[bold]{key:>17}[/bold]  {value}", highlight=False)


@app.command("cancel")
def cancel(job_id: str, as_json: bool = JsonOption) -> None:
    """Cancel a queued job (not one that is running or finished)."""

    async def go() -> None:
        async with database() as db, db.write() as session:
            await queue.cancel(session, job_id)

    run(go)
    print_json({"id": job_id, "state": "cancelled"}) if as_json else out.print(
        f"cancelled {job_id}"
    )


def _stats_table(stats: list[queue.QueueStats]) -> Table:
    states = list(JobState)
    table = Table("queue", *[s.value for s in states], "oldest ready (s)", title="keel jobs")
    for item in stats:
        table.add_row(
            item.queue,
            *[str(item.depth.get(s, 0)) for s in states],
            f"{item.oldest_ready_age_seconds:.1f}",
        )
    return table


async def _stats() -> list[queue.QueueStats]:
    async with database() as db, db.read() as session:
        return await queue.stats(session, SYSTEM_CLOCK.now())


def stats_dict(stats: list[queue.QueueStats]) -> dict[str, Any]:
    return {"queues": [item.as_dict() for item in stats]}


@app.command("stats")
def stats_command(
    watch: bool = typer.Option(False, "--watch", help="Refresh live until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes."),
    as_json: bool = JsonOption,
) -> None:
    """Queue depth by queue and state, and the age of the oldest ready job."""
    if not watch:
        stats = run(_stats)
        print_json(stats_dict(stats)) if as_json else out.print(_stats_table(stats))
        return
    try:
        with Live(_stats_table(run(_stats)), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(_stats_table(run(_stats)), refresh=True)
    except KeyboardInterrupt:
        return


@dead_app.command("list")
def dead_list(
    queue_name: str | None = QueueOption, limit: int = LimitOption, as_json: bool = JsonOption
) -> None:
    """List dead jobs."""
    _print_jobs(run(lambda: _list(JobState.DEAD, queue_name, limit)), as_json)


@dead_app.command("show")
def dead_show(job_id: str, as_json: bool = JsonOption) -> None:
    """Show a dead job, with its last error."""
    show(job_id, as_json)


@dead_app.command("requeue")
def dead_requeue(
    job_ids: list[str] = typer.Argument(None, help="Dead job ids (none with --all)."),
    every: bool = typer.Option(False, "--all", help="Requeue every dead job."),
    as_json: bool = JsonOption,
) -> None:
    """Put dead jobs back to ready, with a fresh set of attempts."""
    if not job_ids and not every:
        fail("name job ids, or pass --all")

    async def go() -> list[str]:
        async with database() as db, db.write() as session:
            return await queue.requeue_dead(session, None if every else job_ids)

    requeued = run(go)
    print_json({"requeued": requeued}) if as_json else out.print(f"requeued {len(requeued)}")


@dead_app.command("purge")
def dead_purge(
    job_ids: list[str] = typer.Argument(None, help="Dead job ids (none with --older-than)."),
    older_than_hours: float | None = typer.Option(
        None, "--older-than-hours", min=0, help="Purge every job dead for longer than this."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Delete dead jobs for good."""
    if not job_ids and older_than_hours is None:
        fail("name job ids, or pass --older-than-hours (0 purges every dead job)")

    async def go() -> int:
        async with database() as db, db.write() as session:
            if job_ids:
                return await queue.purge_dead(session, job_ids=job_ids)
            return await queue.purge_dead(
                session, older_than=timedelta(hours=older_than_hours or 0)
            )

    count = run(go)
    print_json({"purged": count}) if as_json else out.print(f"purged {count}")


def worker(
    queues: str | None = typer.Option(
        None,
        "--queues",
        help="Queues to serve, comma-separated, each optionally name=N "
        "(default: KEEL_JOBS_QUEUES).",
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", min=1, help="Concurrency of each queue named without =N."
    ),
    http_port: int | None = typer.Option(
        None,
        "--http-port",
        min=0,
        max=65535,
        help="Port for /live, /ready and /metrics (default: KEEL_WORKER_HTTP_PORT, 9100; 0: none).",
    ),
    http_host: str | None = typer.Option(
        None,
        "--http-host",
        help="Interface of that port (default: KEEL_WORKER_HTTP_HOST, 127.0.0.1).",
    ),
    autoscale: str | None = typer.Option(
        None,
        "--autoscale",
        metavar="MIN..MAX",
        help="Run MIN to MAX worker processes, scaled by queue depth and oldest-ready age "
        "(KEEL_WORKER_AUTOSCALE_*).",
    ),
    supervised: bool = typer.Option(
        False,
        "--supervised",
        hidden=True,
        help="Started by --autoscale: also drain when the supervisor is gone.",
    ),
) -> None:
    """Run a standalone job worker until SIGTERM/SIGINT (graceful stop)."""
    settings = Settings()
    chosen = parse_queues(queues, concurrency) if queues else None
    if queues and not chosen:
        fail("--queues names no queue")
    port = HttpPort.from_settings(settings, host=http_host, port=http_port)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT is handled inside
            if autoscale is None:
                asyncio.run(run_worker(settings, chosen, port, supervised=supervised))
                return
            try:
                minimum, maximum = parse_range(autoscale)
            except ValueError as error:
                fail(f"--autoscale: {error}")
            supervisor = WorkerSupervisor(
                settings,
                scale_policy(settings, minimum, maximum),
                chosen or worker_config(settings).queues,
                port,
            )
            asyncio.run(supervisor.run())
    except KeelError as error:
        fail(error.detail)


def register(root: typer.Typer) -> None:
    root.command("worker")(worker)
    root.add_typer(app, name="jobs")
