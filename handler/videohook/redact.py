"""Scrubbing secrets out of text that came from outside (the provider's messages).

Why: the provider may quote our request back in its error text - the callBackUrl with its
token, even the API key - and that text is shown in answers, logged, stored as a task's
`provider_msg` and published in events. Secrets we know are replaced wherever they appear
(also URL-encoded); the value of any `...token=` query parameter is replaced too, so a token
we do not know (a signed URL's security token, another stack's callback token) goes as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "scrub"]

MASK = "***"

#: Shorter values are not scrubbed: replacing a short test value would mangle ordinary words,
#: and real tokens and keys are 32 characters or more.
MIN_SECRET_CHARS = 8

# `token=value` or `token%3Dvalue` (a URL inside another URL), for any name ending in "token"
# (`token`, `X-Amz-Security-Token`, `access_token`); the value runs to the next delimiter.
_TOKEN_PARAM = re.compile(r"(?i)(?P<name>[\w.-]*token(?:=|%3D))(?P<value>(?:(?!%26|%23)[^&#\s\"'<>)\],;])+)")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every known secret (as is or URL-encoded) and every token parameter masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}:
            text = text.replace(form, MASK)
    return _TOKEN_PARAM.sub(lambda m: m.group("name") + MASK, text)
