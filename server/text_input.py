"""What every interface (the HTTP API's schemas, the MCP tool, Slack, the CLI) takes as text: not blank.

A question of no-break spaces, zero-width spaces or control characters is blank to a reader, though not to
``str.strip``. (Text must be Unicode too: ``indexer.documents.not_unicode``, which the readers of files
use as well.)
"""

from __future__ import annotations

import re

# Characters that show nothing: C0 and C1 controls and every Unicode space (white space), soft hyphen,
# zero-width and joiner characters, direction marks and embeddings, word joiner and invisible operators,
# the byte order mark. Spelt in \u escapes, which Python's regular expressions and JSON Schema's (ECMA-262)
# read alike, so that the pattern published in /openapi.json says exactly what ``blank`` checks.
INVISIBLE = (
    "\\u0000-\\u0020\\u007f-\\u00a0\\u00ad\\u1680\\u180e\\u2000-\\u200f\\u2028-\\u202f\\u205f-\\u2064"
    "\\u2066-\\u206f\\u3000\\ufeff"
)
# a visible character after any invisible ones: anchored by marshmallow (re.match), searched by JSON Schema
VISIBLE_PATTERN = f"[{INVISIBLE}]*[^{INVISIBLE}]"
_VISIBLE = re.compile(f"[^{INVISIBLE}]")


def blank(value: str) -> bool:
    """Whether ``value`` has no visible character (see ``INVISIBLE``)."""
    return _VISIBLE.search(value) is None
