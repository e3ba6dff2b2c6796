"""A request's JSON body: declared as JSON, read once (a chunked one whole, within the route's limit),
parsed once, and handed to the schemas as parsed.

Read and parsed here rather than by webargs (APIFlask's request parser), which answers a body that is not
JSON with a bare "Bad Request", and one nested past the interpreter's recursion limit, or holding an
integer of more than 4,300 digits, with a 500 (a ``RecursionError`` or ``ValueError`` it does not catch);
parsed here and again there, a body nested just under the limit still failed there, a few frames deeper.
And werkzeug stops reading a chunked body at the route's limit without looking for more, so one longer
than the limit was parsed cut short (400) instead of refused (413).

A route calls ``require_json`` before its key check (415) and ``read_json`` after it, so that a request
without a valid key is refused before its body is read.
"""

from __future__ import annotations

import json
from typing import Any

from apiflask import abort
from apiflask.schema_adapters.marshmallow import parser
from flask import Request, g, request
from marshmallow import Schema

from server.drain import body_framing, read_chunked

BODY_METHODS = ("POST", "PUT", "PATCH")


def require_json() -> None:
    """A request with a body declares it JSON (415 otherwise)."""
    if request.method in BODY_METHODS and not request.is_json:
        abort(415, "send the body as JSON with Content-Type: application/json")


def read_json() -> None:
    """Read and parse the body (413, 400 saying why); the schemas get what was parsed."""
    if request.method not in BODY_METHODS:
        return
    _read_chunked_body()
    body = request.get_data(cache=True)
    if not body.strip():
        return  # webargs reads it as no data: the schema names the fields missing
    try:
        g.json_body = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        abort(
            400, f"invalid request: the body is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON"
        )
    except RecursionError:
        abort(400, "invalid request: the JSON nests too deeply to read")
    except json.JSONDecodeError as exc:
        abort(400, f"invalid request: the body is not JSON: {exc}")
    except ValueError:  # Python's bound on integer digits
        abort(400, "invalid request: a number in the body has more than 4,300 digits")


@parser.location_loader("json")
def _parsed(req: Request, schema: Schema) -> Any:
    """What ``read_json`` parsed; webargs' own reading for a route that does not call it."""
    if "json_body" in g:
        return g.json_body
    return parser.load_json(req, schema)


def _read_chunked_body() -> None:
    """A body sent chunked (no declared length), read now and handed on as a declared one; 413 beyond the
    limit (the turns, server.admission, read a question's ahead already). A refused body's rest is left to
    the unread-body discard (server.drain)."""
    if body_framing(request.environ) != (0, True):
        return
    # the limit is always set: the app's MAX_CONTENT_LENGTH, or the route's
    if not read_chunked(request.environ, request.max_content_length):
        abort(413)
