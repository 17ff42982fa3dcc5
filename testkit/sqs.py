"""SQS messages as Lambda's SQS event source hands them to a function.

A test receives messages from a queue (moto's) and gives them to the transfer function
directly; `sqs_event` shapes them into the `Records` of a sample event from events/, so the
handler reads the same fields it reads when deployed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from testkit.callbacks import load_event


def sqs_event(messages: Iterable[dict[str, Any]], sample: str = "transfer_message.json") -> dict[str, Any]:
    """An SQS event whose records are `messages` (ReceiveMessage answers), on `sample`'s record."""
    template = load_event(sample)["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(template)
        record.update(
            messageId=message["MessageId"],
            receiptHandle=message["ReceiptHandle"],
            body=message["Body"],
            md5OfBody=message["MD5OfBody"],
        )
        records.append(record)
    return {"Records": records}
