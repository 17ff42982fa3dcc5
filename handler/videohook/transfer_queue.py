"""The transfer queue: one message per task that needs copying, and the one way to queue it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault
from videohook.models import TransferRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from videohook.store import TaskStore


class TransferQueue:
    def __init__(self, queue_url: str, client: SQSClient) -> None:
        self.queue_url = queue_url
        self.client = client

    def send(self, task_id: str) -> None:
        """Queue a transfer; AwsFault when SQS cannot take it (the callback answers 500)."""
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=TransferRequest(task_id).to_json())
        except (ClientError, BotoCoreError) as exc:
            raise AwsFault(f"the transfer could not be queued ({type(exc).__name__})") from exc


def queue_transfer(queue: TransferQueue, store: TaskStore, task_id: str, *, requeues: int = 0) -> None:
    """Send the task's transfer message, then mark the task queued.

    Every path that queues a transfer (a callback, reconcile, an operator's redrive) goes
    through here. In this order: a send that fails leaves the task unmarked, so the next
    callback or the reconcile job queues it again; a mark that fails after the send only
    means a duplicate message, which the worker's lease makes harmless. `requeues` counts
    reconcile's recoveries of the task (docs/task-record.md "Nothing is stuck").
    """
    queue.send(task_id)
    store.mark_queued(task_id, requeues=requeues)
