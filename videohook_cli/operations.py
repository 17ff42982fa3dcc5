"""Operations on a stack's AWS resources (the local stack's embedded endpoint, or the account).

`redrive` gives failed transfers another chance: every dead-lettered transfer message goes
back to the transfer queue, and every TRANSFER_FAILED task is moved back to RECEIVED with one
new message, through the task store's own rules (videohook.store), so running it twice, or
while workers run, is harmless: the lease and the status rules make extra messages no-ops.
"""

from __future__ import annotations

from typing import Any

from videohook_cli.target import Target


def move_dead_letters(sqs: Any, source_url: str, target_url: str) -> int:
    """Move every message from the dead-letter queue back; the count moved."""
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


def requeue_failed_tasks(store: Any, queue: Any) -> int:
    """TRANSFER_FAILED -> RECEIVED plus one transfer message, per task; the count re-queued."""
    from videohook.transfer_queue import queue_transfer  # the one "queue a transfer" step

    requeued = 0
    for task_id in store.failed_transfers():
        if store.requeue_failed(task_id):
            queue_transfer(queue, store, task_id)
            requeued += 1
    return requeued


def redrive(target: Target) -> tuple[int, int]:
    """(dead-lettered messages moved back, TRANSFER_FAILED tasks re-queued)."""
    from videohook.store import TaskStore
    from videohook.transfer_queue import TransferQueue

    resources = target.resources
    sqs = target.aws_client("sqs")
    transfer_queue = resources.get("TransferQueueUrl")
    moved = move_dead_letters(sqs, resources.get("TransferDeadLetterQueueUrl"), transfer_queue)
    store = TaskStore(resources.get("TasksTableName"), target.aws_client("dynamodb"))
    requeued = requeue_failed_tasks(store, TransferQueue(transfer_queue, sqs))
    return moved, requeued
