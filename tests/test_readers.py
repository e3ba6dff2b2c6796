"""Ingestion: every supported format, ids, titles, bad files, empty documents, duplicate ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from indexer import CorpusError, read_corpus
from tests.conftest import CORPUS, DATA
from tests.pdfgen import write_pdf


def by_id(result):
    return {d.id: d for d in result.documents}


def test_real_corpus_reads_all_five_documents_with_relative_ids():
    result = read_corpus([CORPUS])
    assert sorted(by_id(result)) == sorted(p.name for p in CORPUS.glob("*.txt"))
    assert result.skipped == []
    first = by_id(result)["000_de246961d5590b13.txt"]
    assert first.title == "China To Hold 2020 Space Conference In September"
    # The white paper is one unpunctuated line: no heading, so the title falls back to the file stem.
    assert by_id(result)["004_7eff6b0a2d74b62d.txt"].title == "004_7eff6b0a2d74b62d"


def test_folders_are_read_recursively_and_ids_are_relative_paths(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.txt").write_text("Deep text.")
    (tmp_path / "top.md").write_text("# A heading\n\nSome *markdown* body.")
    (tmp_path / ".hidden.txt").write_text("never read")
    docs = by_id(read_corpus([tmp_path]))
    assert set(docs) == {"a/b/deep.txt", "top.md"}
    assert docs["top.md"].title == "A heading"
    assert docs["top.md"].text.startswith("# A heading")


def test_html_keeps_visible_text_only(tmp_path: Path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>Launch news</title><style>p{color:red}</style></head>"
        "<body><script>var secret = 1;</script><h1>Long March 5</h1><p>The rocket <b>flew</b> today.</p>"
        "<noscript>enable js</noscript></body></html>"
    )
    doc = by_id(read_corpus([tmp_path]))["page.html"]
    assert doc.title == "Launch news"
    assert "Long March 5" in doc.text and "The rocket" in doc.text and "flew" in doc.text
    for hidden in ("secret", "color:red", "enable js"):
        assert hidden not in doc.text


def test_html_is_read_in_the_character_set_it_declares(tmp_path: Path):
    # found by probing: a page declaring iso-8859-1 was skipped as "not UTF-8"
    (tmp_path / "latin.html").write_bytes(
        '<html><head><meta charset="iso-8859-1"><title>Café</title></head><body><p>Crème brûlée.</p></body></html>'.encode(
            "latin-1"
        )
    )
    (tmp_path / "undeclared.html").write_bytes("<p>caf\xe9</p>".encode("latin-1"))
    (tmp_path / "lying.html").write_bytes(b'<meta charset="no-such-charset"><p>caf\xe9</p>')
    result = read_corpus([tmp_path])
    doc = by_id(result)["latin.html"]
    assert (doc.title, doc.text) == ("Café", "Crème brûlée.")
    reasons = {Path(s.source).name: s.reason for s in result.skipped}
    assert reasons["undeclared.html"].startswith("not UTF-8 text")
    assert "no-such-charset" in reasons["lying.html"]


def test_pdf_text_per_page_with_page_numbers(tmp_path: Path):
    write_pdf(
        tmp_path / "report.pdf",
        ["First page about rockets.", "", "Third page about satellites."],
        title="Report",
    )
    doc = by_id(read_corpus([tmp_path]))["report.pdf"]
    assert doc.title == "Report"
    pages = doc.pages
    assert [p[2] for p in pages] == [1, 3]  # the empty second page is dropped, numbers kept
    assert doc.text[pages[0][0] : pages[0][1]] == "First page about rockets."
    assert doc.text[pages[1][0] : pages[1][1]] == "Third page about satellites."


def test_a_pdf_page_whose_text_cannot_be_read_is_left_out_alone(tmp_path: Path, monkeypatch):
    # found by probing: one page pypdf fails on made the whole PDF skipped (a failure of the library,
    # made to happen here on the second page of a valid file)
    from pypdf import PageObject

    extract = PageObject.extract_text

    def fails_on_page_two(page: PageObject, *args, **kwargs) -> str:
        if "Second" in (text := extract(page, *args, **kwargs)):
            raise ValueError("broken content stream")
        return text

    monkeypatch.setattr(PageObject, "extract_text", fails_on_page_two)
    write_pdf(tmp_path / "report.pdf", ["First page.", "Second page.", "Third page."])
    write_pdf(tmp_path / "only.pdf", ["Second and only page."])
    result = read_corpus([tmp_path])
    doc = by_id(result)["report.pdf"]
    assert [p[2] for p in doc.pages] == [1, 3] and "Second" not in doc.text
    reasons = {Path(s.source).name: s.reason for s in result.skipped}
    assert reasons["report.pdf page 2"] == "text not readable (ValueError: broken content stream)"
    assert reasons["only.pdf"].startswith("not a readable PDF (no page's text could be read")


def test_jsonl_beir_records(tmp_path: Path):
    lines = [
        {"_id": "d1", "title": "T1", "text": "Text one.", "metadata": {"year": 2021}},
        {"id": "d2", "text": "Text two."},
        {"_id": 3, "text": "Integer ids are kept as strings."},
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = by_id(read_corpus([tmp_path]))
    assert set(docs) == {"d1", "d2", "3"}
    assert docs["d1"].title == "T1" and docs["d1"].metadata == {"year": 2021}
    assert docs["d2"].title == ""


def test_scifact_sample_indexes_as_is():
    result = read_corpus([DATA / "scifact_sample" / "corpus.jsonl"])
    lines = (DATA / "scifact_sample" / "corpus.jsonl").read_text().splitlines()
    assert len(result.documents) == sum(1 for line in lines if line.strip())
    assert result.skipped == []
    assert all(d.title and d.text for d in result.documents)


def test_bad_files_are_reported_by_name_and_skipped(tmp_path: Path):
    (tmp_path / "good.txt").write_text("Good text.")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty.md").write_text("   \n\n")
    (tmp_path / "mixed.jsonl").write_text('{"id": "ok", "text": "fine"}\n{not json}\n{"id": "x"}\n[1]\n')
    result = read_corpus([tmp_path])
    assert set(by_id(result)) == {"good.txt", "ok"}
    reasons = {
        Path(s.source.split(":")[0]).name
        + (":" + s.source.split(":")[1] if ":" in s.source else ""): s.reason
        for s in result.skipped
    }
    assert "UTF-8" in reasons["latin1.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert "unsupported" in reasons["image.png"]
    assert reasons["empty.md"] == "empty document"
    assert "JSON" in reasons["mixed.jsonl:2"]
    assert '"text"' in reasons["mixed.jsonl:3"]
    assert "object" in reasons["mixed.jsonl:4"]


def test_what_the_documents_api_refuses_is_skipped_line_by_line(tmp_path: Path):
    # found by probing: one line that was not UTF-8 dropped every line after it (the file was read as one
    # text), a lone surrogate, JSON nested 100,000 deep or a 5,000-digit number stopped the whole build with
    # a traceback, NaN metadata was indexed and then served as invalid JSON, and a file name that is not
    # UTF-8 stopped the build with a message naming no file
    lines = [json.dumps({"id": f"a{i}", "text": f"Line {i} about kittens."}).encode() for i in range(40)]
    lines[10] = b'{"id": "latin", "text": "caf\xe9"}'
    lines[11] = b'{"id": "half", "text": "x \\ud800 y"}'
    lines[12] = b'{"id": "deep", "text": "t", "metadata": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001
    lines[13] = b'{"id": "digits", "text": "t", "metadata": {"n": ' + b"9" * 5000 + b"}}"
    lines[14] = b'{"id": "nan", "text": "t", "metadata": {"x": NaN}}'
    lines[15] = b'{"id": "huge", "text": "t", "metadata": {"x": 1e400}}'
    lines[16] = json.dumps({"id": "i" * 513, "text": "t"}).encode()
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (
        tmp_path / "name-\udcff.txt".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    ).write_text("A file whose name is not UTF-8.")
    (tmp_path / "good.txt").write_text("Good text.")
    (tmp_path / "wide.jsonl").write_text('{"id": "w", "text": "UTF-16"}\n' * 3, encoding="utf-16")
    result = read_corpus([tmp_path])
    assert set(by_id(result)) == {f"a{i}" for i in range(40) if not 10 <= i <= 16} | {"good.txt"}
    assert [s.reason for s in result.skipped if "wide" in s.source] == [
        "UTF-16 text (a byte order mark says so): save it as UTF-8"
    ]
    reasons = {s.source.rsplit("/", 1)[-1]: s.reason for s in result.skipped}
    assert reasons["m.jsonl:11"].startswith("not UTF-8 text")
    assert "surrogate" in reasons["m.jsonl:12"]
    assert reasons["m.jsonl:13"] == "its JSON nests too deeply to read"
    assert reasons["m.jsonl:14"] == "a number has more than 4,300 digits"
    assert "not a JSON number" in reasons["m.jsonl:15"] and "not a JSON number" in reasons["m.jsonl:16"]
    assert reasons["m.jsonl:17"] == "its id is 513 characters long, more than 512"
    assert "its id holds '\\udcff'" in reasons["name-\udcff.txt"]


def test_what_is_not_a_regular_file_is_reported(tmp_path: Path):
    # found by probing: a broken link or a pipe in the corpus was left out without a word
    (tmp_path / "good.txt").write_text("Good text.")
    (tmp_path / "broken.txt").symlink_to(tmp_path / "gone.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    result = read_corpus([tmp_path])
    assert set(by_id(result)) == {"good.txt"}
    reasons = {Path(s.source).name: s.reason for s in result.skipped}
    assert reasons == {
        "broken.txt": "not a regular file (a broken link, a pipe or a device)",
        "pipe.txt": "not a regular file (a broken link, a pipe or a device)",
    }


def test_duplicate_ids_name_both_sources(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text('{"id": "same", "text": "one"}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "same", "text": "two"}\n')
    with pytest.raises(CorpusError) as info:
        read_corpus([tmp_path])
    assert "a.jsonl:1" in str(info.value) and "b.jsonl:1" in str(info.value)


def test_missing_path_is_an_error(tmp_path: Path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus([tmp_path / "nope"])
