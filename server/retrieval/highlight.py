"""The span of a passage that best answers the question: one sentence, or a short word window where the
text has no sentences (the stemmed white paper).

Spans are scored like retrieval scores passages: BM25 over the same analysed terms with the corpus' own
idf, fused with the question's cosine to the sentence's vector, which the indexer stored from the passage's
own forward pass (late chunking: the sentence read in context). No model call happens here. Inside a sentence too long to quote
(unpunctuated text), the window is the one holding the most question words, centred on them, so the words
around the match (where the answer usually is) come with it.

The sentence that answers is often not the one that repeats the question but the one after it ("The
second meeting was held in Beijing. ASE and ISMS attended."): each span also gets ``CONTEXT_WEIGHT`` of
the score of the span before it. A question asking for a quantity or a time ("How many ...", "When ...")
is answered by a span that holds a number or a date: when some span does, only those are considered.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from indexer.chunking import LONG_SENTENCE_WORDS, sentence_spans, word_spans
from indexer.lexical import BM25_B, BM25_K1

WINDOW_WORDS = 20  # length of the word window quoted from a sentence too long to quote whole
HEADING_WORDS = 12
LAYOUT_CACHE = 1024  # passages whose analysed sentences are kept (a few KB each)
SENTENCE_MARKS = (".", "!", "?", "…", "。", "！", "？", ":", ";")
# Measured on the dev questions (BENCHMARKS.md): the highlight holds the evidence in 17 of 21 passages
# without the context carry-over, 18 with it (weights 0.5 to 0.7 alike).
CONTEXT_WEIGHT = 0.5  # share of the previous span's score added to a span's own
_ASKS_FOR_NUMBER = re.compile(
    r"\bhow\s+(many|much|long|far|old|often|big|large|high|tall|deep|wide|heavy|soon)\b|\bwhen\b"
    r"|\bwhat\s+(year|date|time|day|month|percentage|number|amount|age|size)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    r"hundreds?|thousands?|millions?|billions?|dozens?|half|once|twice|first|second|third|"
    r"january|february|march|april|may|june|july|august|september|october|november|december|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|yesterday|tomorrow)\b",
    re.IGNORECASE,
)

Analyzer = Callable[[Sequence[str]], list[list[str]]]


@dataclass(frozen=True)
class Highlight:
    text: str
    start: int  # offsets inside the passage text
    end: int


@dataclass(frozen=True)
class _Sentence:
    """A sentence short enough to quote: its offsets and the analysed terms it holds, with counts."""

    start: int
    end: int
    counts: Counter[str]
    length: int  # how many terms, repeats included


@dataclass(frozen=True)
class _LongSentence:
    """A sentence too long to quote (unpunctuated text), quoted as a window of its words: the words'
    offsets, the words each term occurs in (in order, once per occurrence) and a running count of terms."""

    words: tuple[tuple[int, int], ...]
    where: dict[str, tuple[int, ...]]  # term -> indices of the words holding it
    before: tuple[int, ...]  # before[w]: how many terms words[:w] hold (n + 1 entries)


@dataclass(frozen=True)
class _Layout:
    """What the highlight needs of a passage whatever the question: its sentences in order (headings
    apart), each analysed once."""

    sentences: tuple[_Sentence | _LongSentence, ...]
    headings: tuple[_Sentence, ...]


def _long_sentence(words: list[tuple[int, int]], word_terms: list[list[str]]) -> _LongSentence:
    where: dict[str, list[int]] = {}
    for w, terms in enumerate(word_terms):
        for term in terms:
            where.setdefault(term, []).append(w)
    return _LongSentence(
        tuple(words),
        {term: tuple(found) for term, found in where.items()},
        tuple(itertools.accumulate((len(t) for t in word_terms), initial=0)),
    )


@functools.lru_cache(maxsize=LAYOUT_CACHE)
def _layout(text: str, title: str, analyze: Analyzer) -> _Layout:
    """Sentences, word windows' material and analysed terms of ``text``: the same for every question, so
    a passage returned again (a popular one, or the next page of an answer) is not re-tokenised."""
    parts: list[list[tuple[int, int]]] = []  # per sentence: its words (long) or its own offsets
    for start, end in sentence_spans(text):
        long = len(text[start:end].split()) > LONG_SENTENCE_WORDS  # as many as word_spans finds, faster
        parts.append(word_spans(text, start, end) if long else [(start, end)])
    # one analyzer call for all: the words of long sentences, the short sentences whole
    terms = iter(analyze([text[s:e] for part in parts for s, e in part]))
    sentences: list[_Sentence | _LongSentence] = []
    headings: list[_Sentence] = []
    for part in parts:
        if len(part) > 1:
            sentences.append(_long_sentence(part, [next(terms) for _ in part]))
            continue
        (start, end), held = part[0], next(terms)
        sentence = _Sentence(start, end, Counter(held), len(held))
        (headings if _is_heading(text[start:end], title) else sentences).append(sentence)
    return _Layout(tuple(sentences), tuple(headings))


def _window(sentence: _LongSentence, wanted: Mapping[str, float]) -> tuple[int, int, dict[str, int], int]:
    """The ``WINDOW_WORDS`` window holding the most (idf-weighted, distinct) question terms; among equals,
    the one whose matching words sit closest to its centre, then the first. Returns its offsets, the count
    of each wanted term inside it and how many terms it holds."""
    size = min(WINDOW_WORDS, len(sentence.words))
    found = {term: sentence.where[term] for term in wanted if term in sentence.where}
    terms_at: dict[int, list[str]] = {}  # matching word -> the question terms it holds
    for term, held in found.items():
        for w in held:
            terms_at.setdefault(w, []).append(term)
    a = _best_start(terms_at, wanted, size, len(sentence.words) - size + 1) if terms_at else 0
    b = a + size
    counts = {term: sum(1 for w in held if a <= w < b) for term, held in found.items()}
    return sentence.words[a][0], sentence.words[b - 1][1], counts, sentence.before[b] - sentence.before[a]


def _best_start(
    terms_at: Mapping[int, list[str]], wanted: Mapping[str, float], size: int, starts: int
) -> int:
    """The first word of ``_window``'s window, of the ``starts`` possible. Which matching words a window
    holds changes only where one enters or leaves it, so the windows fall into a few runs that hold the
    same words (and weigh the same); inside a run only the distance of those words' mean position from the
    window's centre changes, and it is least next to one start worked out directly. So a handful of starts
    per run are scored, not every start: the same window as scoring every one (checked against that, on
    every long sentence of the corpus and of SciFact with 255,000 term sets, when this replaced it; weights
    are summed in another order than that numpy version's, so windows whose weights differ by a rounding
    error at the ninth decimal may compare otherwise)."""
    matching = sorted(terms_at)
    cuts = {0}
    for m in matching:
        if m - size + 1 > 0:  # the first window holding m
            cuts.add(m - size + 1)
        if m + 1 < starts:  # the first window past it
            cuts.add(m + 1)
    bounds = [*sorted(cuts), starts]
    centre = (size - 1) / 2
    best = (0.0, 0.0, 0)  # (-weight, distance from the centre, start): the least wins
    for lo, hi in itertools.pairwise(bounds):
        inside = matching[bisect.bisect_left(matching, lo) : bisect.bisect_right(matching, lo + size - 1)]
        if not inside:
            continue  # weighs 0: the first window stands for these
        held = {t for m in inside for t in terms_at[m]}
        weight = round(sum(w for t, w in wanted.items() if t in held) * 1e9) / 1e9  # as np.round(x, 9)
        k, total = len(inside), sum(inside)
        nearest = int(total / k - centre)  # the start whose centre is nearest to the words' mean position
        for f in {lo, hi - 1, *(min(hi - 1, max(lo, nearest + d)) for d in (-1, 0, 1, 2))}:
            key = (-weight, abs((total - f * k) / k - centre), f)
            best = min(best, key)
    return best[2]


def _is_heading(sentence: str, title: str) -> bool:
    """The document's title, or a short line with no sentence punctuation: it names the topic (so it
    repeats the question's words) but rarely answers anything, and the title is shown beside the passage."""
    if sentence.strip().lower() == title.strip().lower():
        return True
    return len(sentence.split()) <= HEADING_WORDS and not sentence.rstrip("\"'”’)]").endswith(SENTENCE_MARKS)


def candidate_spans(
    text: str, wanted: Mapping[str, float], analyze: Analyzer, title: str = ""
) -> list[tuple[int, int, Mapping[str, int], int]]:
    """Sentences of ``text`` (headings only when there is nothing else); inside a sentence too long to
    quote, its best word window. Each as ``(start, end, term counts, number of terms)``."""
    layout = _layout(text, title, analyze)
    spans: list[tuple[int, int, Mapping[str, int], int]] = [
        _window(s, wanted) if isinstance(s, _LongSentence) else (s.start, s.end, s.counts, s.length)
        for s in layout.sentences
    ]
    return spans or [(s.start, s.end, s.counts, s.length) for s in layout.headings]


def _bm25(
    spans: Sequence[tuple[int, int, Mapping[str, int], int]], wanted: Mapping[str, float]
) -> list[float]:
    average = max(1.0, sum(length for *_, length in spans) / max(1, len(spans)))
    scores = []
    for _, _, counts, length in spans:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / average)
        scores.append(
            sum(
                w * counts[t] * (BM25_K1 + 1) / (counts[t] + norm) for t, w in wanted.items() if counts.get(t)
            )
        )
    return scores


def _standardised(values: list[float]) -> list[float]:
    """Mean 0, standard deviation 1 (all zeros if they are all equal): ``fusion.zscore`` for the few spans
    of one passage, in plain Python, where numpy's cost per call was most of a highlight's."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std for v in values] if std > 0 else [0.0] * len(values)


def asks_for_number(question: str) -> bool:
    """Whether an English question asks for a quantity, a duration or a time ("How many ...", "When ...")."""
    return bool(_ASKS_FOR_NUMBER.search(question))


def best_span(
    text: str,
    question_terms: Sequence[str],
    idf: Mapping[str, float],
    analyze: Analyzer,
    dense: Mapping[tuple[int, int], float] | None = None,
    alpha: float = 0.5,
    title: str = "",
    *,
    question: str = "",
) -> Highlight:
    """The best span of ``text``: BM25 of the question's terms, fused (z-scores, ``alpha`` on the dense side)
    with ``dense``, the question's cosine to each stored sentence vector, plus the context carry-over; when
    ``question`` asks for a number, among the spans that hold one. The first span wins ties."""
    wanted = {t: idf[t] for t in question_terms if idf.get(t, 0.0) > 0}
    candidates = candidate_spans(text, wanted, analyze, title)
    if not candidates:  # no sentence at all (white space only)
        whole = analyze([text])[0]
        candidates = [(0, len(text), Counter(whole), len(whole))]
    spans = [(s, e) for s, e, _, _ in candidates]
    scores = _bm25(candidates, wanted)
    if dense and len(spans) > 1:
        cosines = [dense.get(span) for span in spans]
        known = [c for c in cosines if c is not None]
        if known:
            # a window inside a long sentence has no stored vector: it gets the average dense evidence (the
            # passage's own cosine, tried, is higher than most sentences' and made windows win regardless)
            average = sum(known) / len(known)
            cosines = [average if c is None else c for c in cosines]
            scores = [
                (1 - alpha) * b + alpha * c
                for b, c in zip(_standardised(scores), _standardised(cosines), strict=True)
            ]
    scores = [
        score + CONTEXT_WEIGHT * before for score, before in zip(scores, [0.0, *scores[:-1]], strict=True)
    ]
    if question and asks_for_number(question):
        numbers = [bool(_NUMBER.search(text[s:e])) for s, e in spans]
        if any(numbers):  # a span with no number or date cannot answer "how many" or "when"
            scores = [score if number else -math.inf for score, number in zip(scores, numbers, strict=True)]
    best = max(range(len(scores)), key=scores.__getitem__)  # the first of equals
    start, end = spans[best]
    return Highlight(text[start:end], start, end)
