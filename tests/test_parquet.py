"""The Parquet passage format: round trip, the no-offsets rule, refusals that name file and row, and an index
built from a Parquet file answering over HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from indexer import ChunkingConfig, CorpusError, read_corpus
from indexer.chunking import chunk_document, chunk_id, quotable_sentences
from indexer.parquet import Provenance, read_passages, write_passages
from semqa.launch import running_server
from tests.conftest import CORPUS
from tests.pdfgen import write_pdf

DIM = 384


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def read(path: Path, sha: str = "", dimension: int = DIM):
    return read_passages([path], model_sha256=sha, dimension=dimension, backend="torch")


def test_round_trip_gives_back_documents_chunks_offsets_and_vectors(tmp_path, encoder):
    docs_dir = tmp_path / "docs"
    shutil.copytree(CORPUS, docs_dir)
    write_pdf(docs_dir / "report.pdf", ["First page about rockets.", "Second page about moons."], title="R")
    (docs_dir / "c.jsonl").write_text(
        json.dumps({"id": "m", "text": "Metadata travels.", "metadata": {"year": 2021, "tags": ["a"]}}) + "\n"
    )
    documents = read_corpus([docs_dir]).documents
    chunks = [c for d in documents for c in chunk_document(d, encoder, ChunkingConfig())]
    spans = [quotable_sentences(c.text) for c in chunks]
    dense = vectors(len(chunks))
    span_vectors = [vectors(len(s), seed=i + 1) for i, s in enumerate(spans)]
    path = tmp_path / "passages.parquet"
    write_passages(
        path, documents, chunks, dense, spans, span_vectors, Provenance("m", encoder.weights_sha256, DIM)
    )

    back = read(path, encoder.weights_sha256)
    assert [(d.id, d.title, d.text, d.metadata, d.source) for d in back.documents] == [
        (d.id, d.title, d.text, d.metadata, d.source) for d in documents
    ]
    assert back.chunks == chunks  # ids, offsets, texts, titles and page metadata
    assert {"page": 1, "page_end": 2} in [c.metadata for c in back.chunks]  # the PDF passage
    assert back.vectors.dtype == np.float32 and np.array_equal(back.vectors, dense)
    assert back.spans == spans
    assert all(np.array_equal(a, b) for a, b in zip(back.span_vectors, span_vectors, strict=True))


def minimal(rows: list[tuple[str, str]], **extra: list) -> pa.Table:
    columns = {
        "document_id": [d for d, _ in rows],
        "text": [t for _, t in rows],
        "vector": pa.array(list(vectors(len(rows))), pa.list_(pa.float32())),
        **extra,
    }
    return pa.table(columns)


def test_without_offsets_a_document_is_its_passages_joined_by_a_blank_line(tmp_path):
    path = tmp_path / "p.parquet"
    rows = [("a", "First passage."), ("b", "Another document."), ("a", "Second passage.")]
    metadata = ['{"lang": "en"}', None, '{"lang": "fr"}']
    pq.write_table(minimal(rows, title=["Doc A", "Doc B", "ignored"], metadata=metadata), path)
    back = read(path)
    a, b = back.documents
    assert (a.id, a.title, a.text, a.metadata) == (
        "a",
        "Doc A",
        "First passage.\n\nSecond passage.",
        {"lang": "en"},
    )
    assert (b.id, b.text, b.metadata) == ("b", "Another document.", {})
    assert [(c.document_id, c.start, c.end) for c in back.chunks] == [
        ("a", 0, 14),
        ("a", 16, 31),
        ("b", 0, 17),
    ]
    assert all(a.text[c.start : c.end] == c.text for c in back.chunks if c.document_id == "a")
    assert [c.chunk_id for c in back.chunks] == [chunk_id(c.document_id, c.start, c.end) for c in back.chunks]
    # Vectors follow their passages: file rows 0, 2, 1.
    assert np.array_equal(back.vectors, pq.read_table(path)["vector"].to_numpy(False)[[0, 2, 1]].tolist())
    assert back.spans == [[], [], []]


def test_offsets_without_document_text_rebuild_the_text(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(minimal([("d", "alpha beta"), ("d", "beta gamma")], start=[0, 6], end=[10, 16]), path)
    back = read(path)
    assert back.documents[0].text == "alpha beta gamma"
    assert [(c.start, c.end) for c in back.chunks] == [(0, 10), (6, 16)]


def bad_file(tmp_path: Path, case: str) -> tuple[Path, int | None]:
    """A file with one defect, and the row the refusal must name (None: the file as a whole)."""
    path = tmp_path / f"{case}.parquet"
    rows = [("d1", "One."), ("d1", "Two."), ("d2", "Three.")]
    table = minimal(rows)
    row: int | None = None
    if case == "dimension":
        short = [list(v) for v in vectors(3)]
        short[2] = short[2][:100]
        table = table.set_column(2, "vector", pa.array(short, pa.list_(pa.float32())))
        row = 2
    elif case == "nan":
        broken = vectors(3)
        broken[1, 7] = np.nan
        table = table.set_column(2, "vector", pa.array(list(broken), pa.list_(pa.float32())))
        row = 1
    elif case == "length":  # found by probing: vectors of 1e30 ranked as NaN, served as invalid JSON
        table = table.set_column(
            2, "vector", pa.array(list(vectors(3) * [[1], [1e30], [1]]), pa.list_(pa.float32()))
        )
        row = 1
    elif case == "missing":
        table = table.drop_columns(["vector"])
    elif case == "metadata":
        table = table.append_column("metadata", pa.array(["{not json", None, "{}"]))
        row = 0
    elif case == "metadata_type":
        table = table.append_column("metadata", pa.array([None, None, "[1, 2]"]))
        row = 2
    elif case == "metadata_nan":  # found by probing: served back as {"x": NaN}, which is not JSON
        table = table.append_column("metadata", pa.array([None, None, '{"x": NaN}']))
        row = 2
    elif case == "long_id":
        table = table.set_column(0, "document_id", pa.array(["d1", "d1", "d" * 600]))
        row = 2
    elif case == "null_id":
        table = table.set_column(0, "document_id", pa.array(["d1", None, "d2"]))
        row = 1
    elif case == "offsets":
        table = table.append_column("start", pa.array([0, 5, 0])).append_column("end", pa.array([4, 12, 6]))
        row = 1
    elif case == "document_text":
        table = (
            table.append_column("start", pa.array([0, 5, 0]))
            .append_column("end", pa.array([4, 9, 6]))
            .append_column("document_text", pa.array(["One. Two!", None, "Three."]))
        )
        row = 1
    elif case == "span":
        table = (
            table.append_column("span_starts", pa.array([[0], [0], [0]], pa.list_(pa.int32())))
            .append_column("span_ends", pa.array([[4], [40], [6]], pa.list_(pa.int32())))
            .append_column(
                "span_vectors", pa.array([[list(v)] for v in vectors(3)], pa.list_(pa.list_(pa.float32())))
            )
        )
        row = 1
    elif case == "weights":
        table = table.replace_schema_metadata({"semqa.model_sha256": "ab" * 32, "semqa.model_name": "other"})
    elif case == "provenance_dimension":
        table = table.replace_schema_metadata({"semqa.dimension": "768"})
    pq.write_table(table, path)
    return path, row


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("dimension", "dimension is 384"),
        ("nan", "NaN"),
        ("length", "length 1e+30, not 1"),
        ("missing", "no column vector"),
        ("metadata", "not valid JSON"),
        ("metadata_type", "JSON object"),
        ("metadata_nan", "not a JSON number"),
        ("long_id", "600 characters long, more than 512"),
        ("null_id", "document_id is null"),
        ("offsets", "do not fit"),
        ("document_text", "is not the passage text"),
        ("span", "does not fit"),
        ("weights", "weights abababababab"),
        ("provenance_dimension", "dimension 768"),
    ],
)
def test_bad_files_are_refused_naming_file_and_row(tmp_path, case, says):
    path, row = bad_file(tmp_path, case)
    with pytest.raises(CorpusError) as info:
        read(path, sha="cd" * 32)
    message = str(info.value)
    assert message.startswith(str(path)) and says in message
    if row is not None:
        assert f"{path} row {row}:" in message


def test_readers_leave_parquet_files_to_the_parquet_reader(tmp_path):
    pq.write_table(minimal([("x", "Embedded elsewhere.")]), tmp_path / "p.parquet")
    (tmp_path / "note.txt").write_text("Plain text.")
    result = read_corpus([tmp_path])
    assert [d.id for d in result.documents] == ["note.txt"]
    assert result.embedded == [tmp_path / "p.parquet"] and result.skipped == []


def test_an_index_built_from_parquet_answers_over_http(tmp_path, encoder, cache_dir):
    """`semqa serve` indexes a folder holding a Parquet file beside a text file, and /ask finds the Parquet
    passage with its vector as given (nothing is embedded again: the vector here is deliberately the
    question's own, which no embedding of the passage text would give)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    question = "Which probe mapped the far side of Callisto?"
    passage = "The Zephyr probe mapped the far side of Callisto in 2031."
    table = pa.table(
        {
            "document_id": ["probes/zephyr", "probes/other"],
            "text": [passage, "Harvest festivals are celebrated in autumn."],
            "vector": pa.array(list(encoder.encode([question, "autumn harvest"])), pa.list_(pa.float32())),
            "title": ["Zephyr", "Festivals"],
            "metadata": ['{"mission": "zephyr"}', None],
        }
    )
    pq.write_table(table, docs / "embedded.parquet")
    (docs / "note.md").write_text("# Gardening\n\nTomatoes need sun and regular watering.")
    env = {"SEMQA_CORPUS": str(docs), "SEMQA_CACHE_DIR": str(cache_dir), "SEMQA_QUIET": "1"}
    with running_server(["--index-dir", str(tmp_path / "index")], env=env) as server:
        assert requests.get(server.url + "/health", timeout=10).json()["documents"] == 3
        body = requests.post(
            server.url + "/ask", json={"question": question, "top_k": 1, "mode": "dense"}, timeout=30
        )
        assert body.status_code == 200
        top = body.json()["passages"][0]
        assert top["document_id"] == "probes/zephyr" and top["text"] == passage
        # the stored vector, not a new one (kept in float16: within 1e-3 of 1)
        assert top["scores"]["dense"] == pytest.approx(1.0, abs=1e-3)
        document = requests.get(server.url + "/documents/probes/zephyr", timeout=10).json()
        assert document["metadata"] == {"mission": "zephyr"} and document["text"] == passage
    assert "1 from Parquet" in server.output or "2 from Parquet" in server.output


def test_vectors_of_another_backend_family_are_refused_and_auto_follows_the_files(tmp_path):
    """One index never mixes int8 and float32 vectors: a file is checked against the build's backend (a file
    that records none holds sentence-transformers' vectors, torch's), and a new index built with the default
    backend takes the family its Parquet files hold."""
    from indexer.parquet import embedded_backend

    plain, int8 = tmp_path / "plain" / "p.parquet", tmp_path / "int8" / "q.parquet"
    for path in (plain, int8):
        path.parent.mkdir()
    pq.write_table(minimal([("a", "One passage.")]), plain)
    table = minimal([("b", "Another passage.")])
    pq.write_table(table.replace_schema_metadata({"semqa.backend": "onnx-int8-avx2"}), int8)
    assert read_passages([plain], model_sha256="", dimension=DIM, backend="onnx").documents[0].id == "a"
    with pytest.raises(CorpusError) as refused:
        read_passages([plain], model_sha256="", dimension=DIM, backend="onnx-int8-avx512_vnni")
    assert "backend torch (none recorded" in str(refused.value) and "--backend onnx" in str(refused.value)
    with pytest.raises(CorpusError, match="--backend onnx-int8"):
        read_passages([int8], model_sha256="", dimension=DIM, backend="torch")
    assert embedded_backend([tmp_path / "plain"]) == "onnx"  # the fastest float32 backend
    assert embedded_backend([tmp_path / "int8"]) == "onnx-int8"
    assert embedded_backend([CORPUS]) is None  # nothing embedded: the default for a new index applies
    with pytest.raises(CorpusError, match="one index takes one of them"):
        embedded_backend([tmp_path])


def test_an_int8_build_takes_only_files_of_its_own_int8_recipe(tmp_path):
    """Int8 exports of other recipes make slightly different vectors and an index records one recipe for
    all of its vectors: a file recording another recipe, or none (written before semqa recorded it), is
    refused by an int8 build; one recording this semqa's is read."""
    from embeddings.onnx_export import INT8_FORMAT

    backend = "onnx-int8-avx512_vnni"
    table = minimal([("a", "One passage.")])
    cases = {"none": {}, "other": {"semqa.int8_format": str(INT8_FORMAT - 1)}}
    cases["ours"] = {"semqa.int8_format": str(INT8_FORMAT)}
    for name, recipe in cases.items():
        pq.write_table(
            table.replace_schema_metadata({"semqa.backend": backend, **recipe}), tmp_path / f"{name}.parquet"
        )
    assert read_passages(
        [tmp_path / "ours.parquet"], model_sha256="", dimension=DIM, backend=backend
    ).documents
    with pytest.raises(CorpusError, match="a format it does not record") as unrecorded:
        read_passages([tmp_path / "none.parquet"], model_sha256="", dimension=DIM, backend=backend)
    assert f"this semqa encodes with format {INT8_FORMAT}" in str(unrecorded.value)
    with pytest.raises(CorpusError, match=f"the int8 export of format {INT8_FORMAT - 1} "):
        read_passages([tmp_path / "other.parquet"], model_sha256="", dimension=DIM, backend=backend)
    # What the Ray build writes records the recipe, so its shards are named (and made again) by it too.
    made = Provenance("m", "sha", DIM, backend, {}, int8_format=INT8_FORMAT).as_metadata()
    assert made["semqa.int8_format"] == str(INT8_FORMAT)
    assert "semqa.int8_format" not in Provenance("m", "sha", DIM, "onnx").as_metadata()
