"""Print a deployed stack's full callback URL, token included: `make callback-url STACK=name`.

This is the `callBackUrl` to give the provider. It contains the secret token, so it is
printed only to your terminal, never logged or stored.
"""

from __future__ import annotations

import argparse
import sys

import boto3

from infra import resources
from videohook.submit import callback_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="the stack name given to `sam deploy`")
    args = parser.parse_args(argv)
    session = boto3.session.Session()
    found = resources.deployed(session, args.stack)
    token = session.client("secretsmanager").get_secret_value(SecretId=found.callback_token_secret)[
        "SecretString"
    ]
    print(callback_url(found.api_base_url or "", token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
