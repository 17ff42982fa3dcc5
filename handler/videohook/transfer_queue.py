"""The transfer queue: one message per task that needs copying."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault
from videohook.models import TransferRequest


class TransferQueue:
    def __init__(self, queue_url: str, client: Any) -> None:
        self.queue_url = queue_url
        self.client = client

    def send(self, task_id: str) -> None:
        """Queue a transfer; AwsFault when SQS cannot take it (the callback answers 500)."""
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=TransferRequest(task_id).to_json())
        except (ClientError, BotoCoreError) as exc:
            raise AwsFault(f"the transfer could not be queued ({type(exc).__name__})") from exc
