"""The `videohook` command (docs/cli.md): the stack owner's tools, local or deployed.

Built on click (commands, options, help) and rich (tables, progress bars). Every failure
is one line on stderr and a non-zero exit: 1 when the command failed (or the watched task
failed, or a download did not match), 2 for a usage error, 3 when `watch --timeout` gave up,
130 on Ctrl-C. Nothing talks to AWS or to a stack until a target has been chosen.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from videohook_cli.errors import CliError
from videohook_cli.target import Target, aws_errors, choose, default_local_api

STATUSES = ["SUBMITTED", "RECEIVED", "TRANSFERRING", "STORED", "GENERATION_FAILED", "TRANSFER_FAILED"]
FINAL = {"STORED", "GENERATION_FAILED", "TRANSFER_FAILED"}
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
PAGE_LIMIT = 100  # the API's largest page
EXIT_TIMEOUT = 3

# Piped or captured, a table is not cut to 80 columns (a sha256 stays on one line).
# Progress bars go to stderr, and only to a terminal: piped or captured, stderr holds errors only.
out = Console(highlight=False, width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200))
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


# --- the target, on the group or on any command ---------------------------------------------


def target_options(command: F) -> F:
    """`--local [API_URL]`, `--stack NAME`, `--region R`: accepted before or after the command name."""
    command = click.option(
        "--region", metavar="R", help="AWS region of the deployed stack (default: AWS_REGION)."
    )(command)
    command = click.option("--stack", metavar="NAME", help="A deployed stack's name (or VIDEOHOOK_STACK).")(
        command
    )
    return click.option(
        "--local",
        metavar="[API_URL]",
        is_flag=False,
        flag_value=default_local_api(os.environ),
        help="The local stack (make serve) at API_URL, default http://127.0.0.1:$API_PORT, port 3000 "
        "when API_PORT is unset (or VIDEOHOOK_LOCAL).",
    )(command)


def target(local: str | None, stack: str | None, region: str | None) -> Target:
    """The command's target: its own options, else the group's, else the environment."""
    group = click.get_current_context().find_root().params
    if local is None and stack is None:
        local, stack = group.get("local"), group.get("stack")
    return choose(local, stack, region or group.get("region"), dict(os.environ))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@target_options
def cli(local: str | None, stack: str | None, region: str | None) -> None:
    """The owner's tools for a videohook stack: list, watch and download archived videos, try callbacks.

    Every command needs a target: --local [API_URL] for the local stack (make serve), or
    --stack NAME [--region R] for a deployed one (or VIDEOHOOK_LOCAL / VIDEOHOOK_STACK).
    """


# --- formatting ------------------------------------------------------------------------------


def human_size(value: Any) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_duration(value: Any) -> str:
    if value is None:
        return "-"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def dimensions(record: dict[str, Any]) -> str:
    if record.get("width") and record.get("height"):
        return f"{record['width']}x{record['height']}"
    return "-"


def progress_text(record: dict[str, Any]) -> str:
    """Size once stored; bytes and percentage while a transfer runs."""
    if record.get("status") == "STORED":
        return human_size(record.get("size"))
    done, total = record.get("bytes_transferred"), record.get("content_length")
    if record.get("status") == "TRANSFERRING" and done is not None:
        if total:
            return f"{int(done) * 100 // int(total)}% of {human_size(total)}"
        return f"{human_size(done)} so far"
    return "-"


def status_name(value: str | None) -> str | None:
    """A status as the API spells it; any case is accepted, the error names them as the API does."""
    if value is None or value.upper() in STATUSES:
        return None if value is None else value.upper()
    raise click.BadParameter(f"{value!r} is not a status; one of {', '.join(STATUSES)}")


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def task_path(task_id: str) -> str:
    return f"/tasks/{quote(task_id, safe='')}"


# --- commands --------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--status",
    metavar="STATUS",
    callback=lambda _ctx, _param, value: status_name(value),
    help="Only tasks in this status: " + ", ".join(STATUSES) + " (any case).",
)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=25, show_default=True, help="How many tasks."
)
@click.option("--json", "as_json", is_flag=True, help="The records as JSON.")
@target_options
def tasks(
    status: str | None, limit: int, as_json: bool, local: str | None, stack: str | None, region: str | None
) -> None:
    """List the archive, newest first."""
    where = target(local, stack, region)
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(found) < limit:
        params = {"status": status.upper() if status else None, "limit": min(PAGE_LIMIT, limit - len(found))}
        page = where.json("GET", "/tasks", params={**params, "cursor": cursor})
        found += page.get("tasks", [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        print_json({"tasks": found, "next_cursor": cursor})
        return
    if not found:
        click.echo("no tasks" + (f" in status {status.upper()}" if status else ""))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TASK", "STATUS", "SIZE / PROGRESS", "DURATION", "DIMENSIONS", "UPDATED"):
        table.add_column(column, no_wrap=column != "TASK", overflow="fold")
    for record in found:
        table.add_row(
            record.get("task_id", "?"),
            record.get("status", "?"),
            progress_text(record),
            human_duration(record.get("duration_seconds")),
            dimensions(record),
            record.get("updated_at", "-"),
        )
    out.print(table)
    if cursor:
        click.echo(f"(more: --limit {limit + PAGE_LIMIT})")


SHOWN_FIELDS = [
    "task_id",
    "status",
    "audio_id",
    "provider_code",
    "provider_msg",
    "video_url",
    "callbacks",
    "attempts",
    "bytes_transferred",
    "content_length",
    "s3_bucket",
    "s3_key",
    "s3_version_id",
    "sha256",
    "size",
    "duration_seconds",
    "width",
    "height",
    "rotation",
    "warnings",
    "error",
    "created_at",
    "updated_at",
    "stored_at",
]


def print_record(record: dict[str, Any], where: Target) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    shown = [name for name in SHOWN_FIELDS if name in record] + sorted(
        name for name in record if name not in SHOWN_FIELDS and name != "download_url"
    )
    for name in shown:
        value = record[name]
        text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
        if name in ("size", "content_length", "bytes_transferred"):
            text = f"{value} ({human_size(value)})"
        table.add_row(name, text)
    if record.get("status") == "TRANSFERRING":
        table.add_row("progress", progress_text(record))
    if record.get("download_url"):
        table.add_row(
            "download", f"videohook download {record['task_id']} {where.flags}  (link valid 15 min: --json)"
        )
    out.print(table)


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON (with download_url when stored).")
@target_options
def show(task_id: str, as_json: bool, local: str | None, stack: str | None, region: str | None) -> None:
    """One task's record."""
    where = target(local, stack, region)
    record = where.json("GET", task_path(task_id))
    if as_json:
        print_json(record)
    else:
        print_record(record, where)


def outcome_line(record: dict[str, Any]) -> str:
    task_id, status = record.get("task_id"), record.get("status")
    if status == "STORED":
        return (
            f"{task_id} STORED: {human_size(record.get('size'))}, {human_duration(record.get('duration_seconds'))}, "
            f"{dimensions(record)}, sha256 {record.get('sha256')}"
        )
    reason = record.get("error") or record.get("provider_msg") or "no reason recorded"
    return f"{task_id} {status}: {reason}"


@cli.command()
@click.argument("task_id")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds between looks.",
)
@click.option(
    "--timeout", type=click.FloatRange(0), default=None, help="Give up after this many seconds (exit 3)."
)
@target_options
def watch(
    task_id: str,
    interval: float,
    timeout: float | None,
    local: str | None,
    stack: str | None,
    region: str | None,
) -> int:
    """A progress bar until the task is final; exit 0 when STORED, 1 when it failed."""
    where = target(local, stack, region)
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        bar = progress.add_task(task_id, total=None)
        while True:
            record = where.json("GET", task_path(task_id))
            status = record.get("status", "?")
            total = record.get("content_length") or record.get("size")
            done = record.get("bytes_transferred") or 0
            progress.update(
                bar,
                description=f"{task_id} {status}",
                completed=int(done),
                total=int(total) if total else None,
            )
            if status in FINAL:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(f"{task_id} still {status} after {timeout:g} s; gave up waiting", EXIT_TIMEOUT)
            time.sleep(interval)
    click.echo(outcome_line(record))
    return 0 if record.get("status") == "STORED" else 1


@cli.command()
@click.argument("task_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save (default TASK_ID.mp4).",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@target_options
def download(
    task_id: str, output: Path | None, force: bool, local: str | None, stack: str | None, region: str | None
) -> None:
    """Save the stored video, with a progress bar; its sha256 is checked against the record."""
    where = target(local, stack, region)
    record = where.json("GET", task_path(task_id))
    if record.get("status") != "STORED" or not record.get("download_url"):
        raise CliError(f"{task_id} is {record.get('status')}, not STORED: there is no video to download yet")
    path = output or Path(f"{task_id}.mp4")
    if path.exists() and not force:
        raise CliError(f"{path} exists: pass --force to replace it, or -o another path")
    partial = path.with_name(path.name + ".part")
    try:
        partial.open("wb").close()  # can it be written at all? before anything is fetched
        partial.unlink()
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None
    digest, size = hashlib.sha256(), 0
    answer = where.http("GET", record["download_url"], stream=True)
    try:
        if answer.status_code != 200:
            raise CliError(
                f"the stored video could not be fetched: HTTP {answer.status_code} from its download link"
            )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
        )
        with (
            Progress(*columns, console=err, disable=not err.is_terminal) as progress,
            partial.open("wb") as sink,
        ):
            bar = progress.add_task(f"{task_id}", total=int(record.get("size") or 0) or None)
            for chunk in _chunks(answer):
                sink.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.update(bar, completed=size)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        answer.close()
    got = digest.hexdigest()
    if got != record.get("sha256") or size != int(record.get("size") or -1):
        partial.unlink(missing_ok=True)
        raise CliError(
            f"MISMATCH: the download is {size} bytes with sha256 {got}, the record says {record.get('size')} "
            f"bytes with sha256 {record.get('sha256')}; nothing saved"
        )
    partial.replace(path)
    click.echo(f"saved {path} ({human_size(size)}, sha256 {got} matches the record)")


def _chunks(answer: Any) -> Iterator[bytes]:
    import requests

    try:
        yield from answer.iter_content(DOWNLOAD_CHUNK_BYTES)
    except requests.RequestException as error:
        raise CliError(f"the download was cut short ({type(error).__name__})") from None


@cli.command("send-callback")
@click.argument("task_id")
@click.argument("video_url")
@click.option("--code", type=int, default=200, show_default=True, help="The provider's code (200 success).")
@click.option(
    "--msg", default="All generated successfully.", show_default=True, help="The provider's message."
)
@target_options
def send_callback(
    task_id: str,
    video_url: str,
    code: int,
    msg: str,
    local: str | None,
    stack: str | None,
    region: str | None,
) -> None:
    """Post a callback signed as the provider signs it (token, and HMAC when a key is configured)."""
    where = target(local, stack, region)
    url = where.callback_url()
    key = where.hmac_key()
    body = {"code": code, "msg": msg, "data": {"task_id": task_id, "video_url": video_url or None}}
    headers = {"Content-Type": "application/json"}
    if key:
        from videohook.signature import sign  # the stack's own signature code

        stamp = str(int(time.time()))
        headers.update({"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": sign(key, task_id, stamp)})
    answer = where.http("POST", url, data=json.dumps(body).encode(), headers=headers)
    how = "token" if where.callback_token() else "no token"
    how += " + HMAC signature" if key else ", no signature (no HMAC key configured)"
    if not answer.ok:
        raise CliError(
            f"callback refused: HTTP {answer.status_code} {' '.join(answer.text.split())[:300]} ({how})"
        )
    click.echo(f"callback for {task_id}: HTTP {answer.status_code} {answer.text.strip()} ({how})")


@cli.command()
@click.argument("task_id")
@click.argument("audio_id")
@click.option("--author", help="Branding: the author shown in the video.")
@click.option("--domain-name", help="Branding: the domain shown in the video.")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON.")
@target_options
def submit(
    task_id: str,
    audio_id: str,
    author: str | None,
    domain_name: str | None,
    as_json: bool,
    local: str | None,
    stack: str | None,
    region: str | None,
) -> None:
    """Ask the provider for a video of TASK_ID's AUDIO_ID (POST /tasks), called back to this stack."""
    body = {"task_id": task_id, "audio_id": audio_id, "author": author, "domain_name": domain_name}
    where = target(local, stack, region)
    record = where.json("POST", "/tasks", body={k: v for k, v in body.items() if v})
    if as_json:
        print_json(record)
        return
    print_record(record, where)
    click.echo(f"follow it: videohook watch {record.get('task_id', task_id)} {where.flags}")


@cli.command("callback-url")
@target_options
def callback_url(local: str | None, stack: str | None, region: str | None) -> None:
    """Print the callBackUrl to give the provider, token included (keep it secret)."""
    click.echo(target(local, stack, region).callback_url())


@cli.command()
@target_options
def redrive(local: str | None, stack: str | None, region: str | None) -> None:
    """Move dead-lettered transfer messages back, and re-queue every TRANSFER_FAILED task."""
    from videohook_cli.operations import redrive as run_redrive

    where = target(local, stack, region)
    with aws_errors(f"redriving {where.description}"):
        moved, requeued = run_redrive(where)
    click.echo(f"moved {moved} dead-lettered message(s) back; re-queued {requeued} TRANSFER_FAILED task(s)")


# --- entry point -----------------------------------------------------------------------------


def normalise(args: list[str]) -> list[str]:
    """A bare `--local` takes the default URL unless a URL follows (so `--local show ID` works).

    What follows is taken as the URL when it has a ':' (a scheme or a port): no command name
    or task id has one, so `--local localhost:3000` is a URL to check, not a stray argument.
    """
    fixed = []
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg == "--local" and (following.startswith("-") or ":" not in following):
            fixed.append(f"--local={default_local_api(os.environ)}")
        else:
            fixed.append(arg)
    return fixed


def fail(message: str) -> None:
    click.echo(f"videohook: {' '.join(message.split())}", err=True)


def main(argv: list[str] | None = None) -> int:
    args = normalise(list(sys.argv[1:] if argv is None else argv))
    try:
        result = cli.main(args=args, prog_name="videohook", standalone_mode=False)
    except CliError as error:
        fail(error.message)
        return error.exit_code
    except click.exceptions.NoArgsIsHelpError as error:  # `videohook` alone: its help
        click.echo(error.ctx.get_help() if error.ctx else "")
        return 0
    except click.UsageError as error:
        where = (
            f"videohook {error.ctx.command_path.split(' ', 1)[1]}"
            if error.ctx and " " in error.ctx.command_path
            else "videohook"
        )
        fail(f"{error.format_message()} (see {where} --help)")
        return 2
    except click.ClickException as error:
        fail(error.format_message())
        return error.exit_code
    except click.exceptions.Exit as error:
        return error.exit_code
    except (click.Abort, KeyboardInterrupt):
        fail("interrupted")
        return 130
    except Exception as error:  # the promise: one line, never a traceback
        message = getattr(error, "message", None)  # the core's errors (videohook.errors) say it in words
        fail(message if isinstance(message, str) else f"unexpected error: {type(error).__name__}: {error}")
        return 1
    return result if isinstance(result, int) else 0
