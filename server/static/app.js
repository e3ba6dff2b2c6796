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
  const askButton = $("ask");
  const statusLine = $("status");
  const errorBox = $("error");
  let inflight = null;

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

  function clearResults() {
    $("answer-box").hidden = true;
    $("passages-box").hidden = true;
    $("passages").replaceChildren();
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

  async function ask() {
    if (inflight) inflight.abort(); // a newer question replaces the one still running
    const controller = new AbortController();
    inflight = controller;
    clearResults();
    errorBox.hidden = true;
    statusLine.textContent = "Searching…";
    askButton.disabled = true;
    const headers = { "Content-Type": "application/json" };
    if (apiKey && apiKey.value) headers.Authorization = `Bearer ${apiKey.value}`;
    try {
      const response = await fetch("ask", {
        method: "POST",
        headers,
        body: JSON.stringify({ question: question.value, mode: mode.value, top_k: Number(topK.value) }),
        signal: controller.signal,
      });
      const body = await response.json().catch(() => null);
      if (response.ok && body) showAnswer(body);
      else showError(describe(response, body));
    } catch (error) {
      if (error.name !== "AbortError") showError("Could not reach the server: is semqa serve running?");
    } finally {
      if (inflight === controller) {
        inflight = null;
        askButton.disabled = false;
      }
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
    else clearResults();
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
