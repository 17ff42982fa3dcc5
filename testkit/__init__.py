"""Shared test support: the builders and fakes used by tests/, bench/ and infra/.

One module per concept: `media` (MP4 files made in memory or on the fly), `video_source`
(a loopback video origin with the ways real CDNs misbehave), `provider` (the provider's API
as a loopback fake), `callbacks` (signed provider callbacks), `aws` (botocore errors,
clients on a local endpoint, client-call hooks), `lambda_context` (Lambda's context
object), `sqs` (received messages as Lambda's SQS event) and `clock` (a clock the test moves).

Dependency direction between the top-level folders, checked by tests/unit/test_layout.py:
handler/ <- testkit/ <- infra/ <- bench/; tests/ may import all of them; nothing imports
tests/. So this package imports only the handler code (`videohook`) and libraries.
"""
