"""Serving: the retrieval core (``server.retrieval``, no web framework) and the interfaces over it (the
Flask HTTP API, MCP, Slack, the question page)."""
