"""``GET /``: the question page, plain HTML, CSS and JavaScript (no build step, nothing from the internet).

The page calls ``POST /ask`` from the browser like any other client, so it shows exactly what the API
answers. It is kept out of the OpenAPI description (a plain Flask blueprint) and served with a strict
Content-Security-Policy: its script and style come from this server only, and passage text is inserted as
text, never as HTML.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from semqa.settings import MODES, Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def create_web(settings: Settings) -> Blueprint:
    """The page and its static files, with the limits of ``settings`` written into the form."""
    web = Blueprint(
        "web", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
    )

    @web.get("/")
    def page() -> str:
        return render_template(
            "index.html",
            modes=MODES,
            max_top_k=settings.max_top_k,
            max_question_chars=settings.max_question_chars,
            key_required=settings.read_requires_key,
        )

    @web.after_request
    def _page_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return web
