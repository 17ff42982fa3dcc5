"""Give failed transfers another chance: `make redrive STACK=name` (or `make redrive` locally).

Moves every dead-lettered transfer message back to the transfer queue, and re-queues every
TRANSFER_FAILED task (RECEIVED again, one new message each). Safe to run twice: the lease
and the status rules make extra messages harmless.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3

from infra import resources
from videohook.store import TaskStore
from videohook.transfer_queue import TransferQueue, queue_transfer


def move_dead_letters(sqs: Any, source_url: str, target_url: str) -> int:
    moved = 0
    while True:
        batch = sqs.receive_message(QueueUrl=source_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = batch.get("Messages", [])
        if not messages:
            return moved
        for message in messages:
            sqs.send_message(QueueUrl=target_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1


def requeue_failed_tasks(store: TaskStore, queue: TransferQueue) -> int:
    requeued = 0
    for task_id in store.failed_transfers():
        if store.requeue_failed(task_id):
            queue_transfer(queue, store, task_id)
            requeued += 1
    return requeued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stack", help="a deployed stack's name; without it, the local stack (AWS_ENDPOINT_URL)"
    )
    args = parser.parse_args(argv)
    session = boto3.session.Session()
    found = resources.deployed(session, args.stack) if args.stack else resources.local(session)
    sqs = session.client("sqs")
    moved = move_dead_letters(sqs, found.dead_letter_queue_url, found.transfer_queue_url)
    store = TaskStore(found.table, session.client("dynamodb"))
    requeued = requeue_failed_tasks(store, TransferQueue(found.transfer_queue_url, sqs))
    print(f"moved {moved} dead-lettered message(s) back; re-queued {requeued} TRANSFER_FAILED task(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
