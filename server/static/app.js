// semqa question page: sends the form to POST /ask and shows the answer and the passages.
// Text from the index is inserted with textContent only (never as HTML).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const question = $("question");
  const mode = $("mode");
  const topK = $("top-k");
  const apiKey = $("api-key"); // present only when the server needs a key for questions
  const statusLine = $("status");
  const errorBox = $("error");
  const TIMEOUT_MS = 30000;
  const timeoutMessage = `No answer within ${TIMEOUT_MS / 1000} seconds: the server is busy or stuck; try again.`;
  let inflight = null; // {controller, timedOut} of the question being answered

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // The API counts offsets in Unicode code points (Python), JavaScript strings in UTF-16 units:
  // slice by code points so a highlight after an emoji or a rare CJK character stays in place.
  function passageText(text, highlight) {
    const paragraph = element("p");
    if (!highlight) {
      paragraph.textContent = text;
      return paragraph;
    }
    const chars = Array.from(text);
    paragraph.append(
      chars.slice(0, highlight.start).join(""),
      element("mark", chars.slice(highlight.start, highlight.end).join("")),
      chars.slice(highlight.end).join(""),
    );
    return paragraph;
  }

  function passageItem(passage) {
    const item = element("li");
    item.append(element("h3", passage.title || passage.document_id));
    const scores = [`score ${passage.score.toFixed(3)}`];
    if (passage.scores.dense !== null) scores.push(`dense ${passage.scores.dense.toFixed(3)}`);
    scores.push(`BM25 ${passage.scores.lexical.toFixed(2)}`);
    item.append(
      element("div", `${passage.document_id} · characters ${passage.start}–${passage.end}`, "meta doc"),
      element("div", scores.join(" · "), "meta score"),
      passageText(passage.text, passage.highlight),
    );
    return item;
  }

  // Back to an empty page: the question being answered (if any) is dropped.
  function resetView() {
    if (inflight) inflight.controller.abort();
    inflight = null;
    $("answer-box").hidden = true;
    $("passages-box").hidden = true;
    $("passages").replaceChildren();
    errorBox.hidden = true;
    statusLine.textContent = "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    statusLine.textContent = "";
  }

  function showAnswer(body) {
    errorBox.hidden = true;
    const count = body.passages.length;
    if (!count) {
      statusLine.textContent = "No passage matches this question. Try other words, or the dense mode.";
      return;
    }
    $("answer").textContent = body.answer.text;
    $("answer-source").textContent = `From ${body.answer.title || body.answer.document_id} (${body.answer.document_id})`;
    $("passages").replaceChildren(...body.passages.map(passageItem));
    $("answer-box").hidden = false;
    $("passages-box").hidden = false;
    statusLine.textContent = `${count} passage${count === 1 ? "" : "s"} in ${Math.round(body.took_ms)} ms (${body.mode}).`;
  }

  // What went wrong, in words, from the API's {"error": {"code", "message"}} body.
  function describe(response, body) {
    const message = body && body.error ? body.error.message : `status ${response.status}`;
    const requestId = response.headers.get("X-Request-ID");
    switch (response.status) {
      case 400:
        return `The question was not accepted: ${message}`;
      case 401:
      case 403:
        return `This server needs an API key for questions: ${message}`;
      case 413:
        return `The question is too long: ${message}`;
      case 429:
        return `Too many questions: try again in ${response.headers.get("Retry-After") || "a few"} seconds.`;
      case 503:
        return `The index is not available: ${message}`;
      default:
        return `The server could not answer (${response.status}): ${message}` +
          (requestId ? ` (request id ${requestId}, for the server log)` : "");
    }
  }

  // The Ask button stays enabled (and keeps the keyboard focus): asking again replaces the question
  // being answered, and a question still unanswered after TIMEOUT_MS is given up with a message.
  async function ask() {
    resetView();
    const headers = { "Content-Type": "application/json" };
    if (apiKey && apiKey.value) {
      if (!/^[\x21-\x7e]+$/.test(apiKey.value)) {
        showError("The API key can only hold printable ASCII characters, without spaces.");
        return;
      }
      headers.Authorization = `Bearer ${apiKey.value}`;
    }
    const request = { controller: new AbortController(), timedOut: false };
    inflight = request;
    const timer = setTimeout(() => {
      request.timedOut = true;
      request.controller.abort();
    }, TIMEOUT_MS);
    statusLine.textContent = "Searching…";
    try {
      const response = await fetch("ask", {
        method: "POST",
        headers,
        body: JSON.stringify({ question: question.value, mode: mode.value, top_k: Number(topK.value) }),
        signal: request.controller.signal,
      });
      const body = await response.json().catch(() => null); // an error page from a proxy is not JSON
      if (inflight !== request) return; // replaced by a newer question, or the page was reset
      if (request.timedOut) showError(timeoutMessage);
      else if (response.ok && body) showAnswer(body);
      else showError(describe(response, body));
    } catch {
      if (inflight !== request) return;
      showError(request.timedOut ? timeoutMessage : "Could not reach the server: is semqa serve running?");
    } finally {
      clearTimeout(timer);
      if (inflight === request) inflight = null;
    }
  }

  // The question lives in the address (?q=&mode=&k=), so an answer can be linked, reloaded and gone
  // back to.
  function fillFromAddress() {
    const params = new URLSearchParams(window.location.search);
    question.value = params.get("q") || "";
    if (params.has("mode")) mode.value = params.get("mode");
    if (params.has("k")) topK.value = params.get("k");
    return question.value.trim() !== "";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams({ q: question.value, mode: mode.value, k: topK.value });
    history.pushState(null, "", `?${params}`);
    ask();
  });
  window.addEventListener("popstate", () => {
    if (fillFromAddress()) ask();
    else resetView();
  });

  fetch("health")
    .then((response) => (response.ok ? response.json() : null))
    .then((health) => {
      if (health) {
        $("index-info").textContent =
          `${health.documents} documents, ${health.chunks} passages, index ${health.index_version}`;
      }
    })
    .catch(() => {});

  if (fillFromAddress()) ask();
})();
