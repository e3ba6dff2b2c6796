"""Encoder backends: torch, onnx and onnx-int8 load offline and encode; ONNX exports are made once, cached,
verified and remade when damaged; vectors are cached and indexes checked per backend; a model that cannot be
exported runs on torch."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
from pydantic import ValidationError

from embeddings import EmbeddingCache, Encoder, load_encoder
from embeddings.backends import (
    BACKENDS,
    NEW_INDEX_BACKEND,
    compatible,
    cpu_flags,
    incompatibility,
    quantization_target,
    resolve_backend,
    this_cpu_quantization,
)
from embeddings.model import default_model_path
from embeddings.onnx_export import INT8_FORMAT, RECORD, export_path, float32_matmuls, verify_export
from indexer import ChunkingConfig, IndexLoadError, IndexReader, build_index
from indexer.layout import STORE
from indexer.store import Store, StoreConfig
from semqa import cli
from semqa.launch import running_server
from semqa.settings import Settings
from server.retrieval import Searcher

from .conftest import CORPUS

PASSAGES = [
    "The Long March 5 rocket lifted off from Wenchang. It carried the Tianwen-1 probe to Mars.",
    "Tiangong is China's space station. Three astronauts live aboard for six months at a time.",
    "A cake recipe: mix flour, sugar and eggs, then bake for forty minutes.",
]
SPANS = [[(0, 49), (50, 88)], [(0, 34), (35, 89)], [(0, 66)]]

# Measured (bench/encoder_backends.py, 522 SciFact passages): onnx differs from torch by at most 2.5e-7 per
# component; the int8 model by up to 0.035, cosine 0.98 or more.
FLOAT32_TOLERANCE = 1e-5


@pytest.fixture(scope="session")
def by_backend(encoder: Encoder, onnx_encoder: Encoder, int8_encoder: Encoder) -> dict[str, Encoder]:
    return {"torch": encoder, "onnx": onnx_encoder, "onnx-int8": int8_encoder}


def copy_model(target: Path) -> Path:
    """A copy of the packaged model folder (links to its files, so the weights are the same bytes)."""
    source = default_model_path()
    for item in source.rglob("*"):
        destination = target / item.relative_to(source)
        if item.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to(item)
    return target


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_loads_offline_and_encodes(by_backend, backend):
    encoder = by_backend[backend]
    assert encoder.backend == (f"onnx-int8-{this_cpu_quantization()}" if backend == "onnx-int8" else backend)
    vectors = encoder.encode(PASSAGES)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    question = encoder.encode(["Which rocket carried the probe to Mars?"])[0]
    assert np.argmax(vectors @ question) == 0
    passage_vectors, span_vectors = encoder.encode_spans(PASSAGES, SPANS)
    assert np.allclose(passage_vectors, vectors, atol=1e-5)  # one forward pass gives encode's vectors
    rebatched, _ = encoder.encode_spans(PASSAGES, SPANS, batch_size=2)
    assert np.abs(rebatched - vectors).max() < FLOAT32_TOLERANCE
    assert [len(s) for s in span_vectors] == [2, 2, 1]
    assert np.allclose(np.linalg.norm(np.vstack(span_vectors), axis=1), 1.0, atol=1e-5)


def test_onnx_vectors_equal_torch_and_int8_differ_a_little(by_backend):
    reference, reference_spans = by_backend["torch"].encode_spans(PASSAGES, SPANS)
    onnx, onnx_spans = by_backend["onnx"].encode_spans(PASSAGES, SPANS)
    assert np.abs(onnx - reference).max() < FLOAT32_TOLERANCE
    assert np.abs(np.vstack(onnx_spans) - np.vstack(reference_spans)).max() < FLOAT32_TOLERANCE
    int8, _ = by_backend["onnx-int8"].encode_spans(PASSAGES, SPANS)
    assert np.abs(int8 - reference).max() > 1e-3  # really another (quantised) model
    assert (int8 * reference).sum(axis=1).min() > 0.95


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_backends_run_the_session_directly_with_sentence_transformers_vectors(by_backend, backend):
    """The ONNX backends skip sentence-transformers' torch wrapper (embeddings.onnx_forward) and must give
    its vectors: texts past the model's 256 tokens are truncated the same way, padding changes nothing, and
    one question alone is encoded as in a batch."""
    encoder = by_backend[backend]
    assert encoder._onnx is not None
    long_text = " ".join(PASSAGES * 40)  # about 1,000 tokens
    texts = [*PASSAGES, long_text, "Mars?", "a"]
    direct = encoder.encode(texts)
    if backend == "onnx":
        wrapped = encoder._model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        )
        assert np.abs(direct - wrapped).max() < FLOAT32_TOLERANCE
    for text, vector in zip(texts, direct, strict=True):  # each text is embedded alone, as a question is
        alone = encoder._model.encode([text], convert_to_numpy=True, normalize_embeddings=True)[0]
        assert np.abs(vector - alone).max() < FLOAT32_TOLERANCE
        assert np.abs(encoder.encode([text])[0] - alone).max() < FLOAT32_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_text_has_the_same_vector_whatever_is_embedded_beside_it(by_backend, backend):
    """Int8 quantises activations per call, over everything in it: before each text ran alone, a passage's
    int8 vector depended on the batch it was computed in (up to 0.035 per component), so a cold-cache
    rebuild or the Ray build gave the same text another vector."""
    encoder = by_backend[backend]
    filler = ["a " * 200, "Mars?", "Tiangong " * 40]
    alone = np.vstack([encoder.encode([p]) for p in PASSAGES])
    for beside in (PASSAGES, [*filler, *PASSAGES], [*PASSAGES, *filler[::-1]]):
        together = encoder.encode(beside)
        rows = [beside.index(p) for p in PASSAGES]
        assert np.abs(together[rows] - alone).max() < FLOAT32_TOLERANCE
        spans_together, _ = encoder.encode_spans(beside, [[(0, len(t))] for t in beside], batch_size=4)
        assert np.abs(spans_together[rows] - alone).max() < FLOAT32_TOLERANCE


def test_a_pipeline_the_direct_pass_does_not_reproduce_keeps_sentence_transformers(onnx_encoder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from embeddings.onnx_forward import OnnxForward

    transformer = onnx_encoder._model[0]
    assert OnnxForward.of(onnx_encoder._model) is not None
    cls_pooling = SentenceTransformer(modules=[transformer, Pooling(384, pooling_mode="cls")], device="cpu")
    assert OnnxForward.of(cls_pooling) is None
    assert OnnxForward.of(SentenceTransformer(modules=[transformer], device="cpu")) is None


def test_export_is_made_once_and_records_its_hashes(onnx_encoder, onnx_cache, caplog):
    folder = export_path(onnx_cache, onnx_encoder.weights_sha256, "onnx")
    record = json.loads((folder / RECORD).read_text())
    assert record["weights_sha256"] == onnx_encoder.weights_sha256 and record["file"] == "onnx/model.onnx"
    assert record["files"]["onnx/model.onnx"]["bytes"] == (folder / "onnx/model.onnx").stat().st_size
    assert verify_export(folder, onnx_encoder.weights_sha256) is None
    before = (folder / "onnx/model.onnx").stat().st_ino
    with caplog.at_level(logging.INFO, logger="embeddings.onnx_export"):
        again = load_encoder(backend="onnx", cache_dir=onnx_cache)
    assert "exported" not in caplog.text  # loaded, not made again
    assert (folder / "onnx/model.onnx").stat().st_ino == before
    assert np.array_equal(again.encode(PASSAGES), onnx_encoder.encode(PASSAGES))


def test_int8_export_is_quantised_for_this_cpu(int8_encoder, onnx_cache):
    quantization = this_cpu_quantization()
    folder = export_path(onnx_cache, int8_encoder.weights_sha256, f"onnx-int8-{quantization}")
    record = json.loads((folder / RECORD).read_text())
    assert record["quantization"] == quantization and record["file"].endswith(f"_{quantization}.onnx")
    assert "onnx/model.onnx" not in record["files"]  # only the quantised model is kept in it
    # Every MatMul with a weight is int8 but the feed-forward's down-projections of layers 0-2; attention's
    # two MatMuls of activations stay float32 in every layer: 6 x 2 + 3 float32, 6 x 6 - 3 int8.
    kept = float32_matmuls(export_path(onnx_cache, int8_encoder.weights_sha256, "onnx") / "onnx/model.onnx")
    down = [k for k in kept if "/output/dense/" in k and "attention" not in k]
    assert len(kept) == 15 and sorted(down) == [f"/encoder/layer.{i}/output/dense/MatMul" for i in range(3)]
    graph = onnx.load(str(folder / record["file"])).graph
    assert sorted(n.name for n in graph.node if n.op_type == "MatMul") == sorted(kept)
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 33


def test_quantisation_target_follows_the_cpu(tmp_path):
    assert quantization_target({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert quantization_target({"avx2", "avx512f", "avx512bw"}, "x86_64") == "avx512"
    assert quantization_target({"sse4_2", "avx2"}, "x86_64") == "avx2"
    assert quantization_target({"neon"}, "aarch64") == "arm64"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "avx512_vnni"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_tampered_export_is_detected_and_made_again(onnx_encoder, onnx_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    source = export_path(onnx_cache, onnx_encoder.weights_sha256, "onnx")
    folder = export_path(cache, onnx_encoder.weights_sha256, "onnx")
    shutil.copytree(source, folder)
    model_file = folder / "onnx/model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    assert "sha256 mismatch" in verify_export(folder, onnx_encoder.weights_sha256)
    assert "other weights" in verify_export(source, "0" * 64)
    with caplog.at_level(logging.WARNING, logger="embeddings.onnx_export"):
        repaired = load_encoder(backend="onnx", cache_dir=cache)
    assert "corrupt (sha256 mismatch)" in caplog.text and "exporting it again" in caplog.text
    assert verify_export(folder, onnx_encoder.weights_sha256) is None
    assert repaired.backend == "onnx"
    assert np.abs(repaired.encode(PASSAGES) - onnx_encoder.encode(PASSAGES)).max() < FLOAT32_TOLERANCE
    record = json.loads((folder / RECORD).read_text())
    (folder / RECORD).write_text(json.dumps({**record, "format": 1}))  # made by an older semqa
    assert "another recipe" in verify_export(folder, onnx_encoder.weights_sha256)
    (folder / RECORD).write_text(json.dumps(record))
    (folder / "tokenizer.json").unlink()
    assert "missing" in verify_export(folder, onnx_encoder.weights_sha256)


def test_two_processes_exporting_at_once_make_one_export(tmp_path):
    """Two gunicorn workers starting together on an empty cache: both load, one export is made."""
    code = (
        "import logging, sys; from pathlib import Path; from embeddings import load_encoder; "
        "logging.basicConfig(level=logging.INFO); "
        "e = load_encoder(backend='onnx', cache_dir=Path(sys.argv[1])); print(e.backend, e.encode(['x']).shape)"
    )
    cache = tmp_path / "cache"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all(out.strip() == "onnx (1, 384)" for out, _ in outputs)
    assert sum("embeddings.onnx_export:exported" in err for _, err in outputs) == 1
    exports = [p.name for p in (cache / "onnx").iterdir() if not p.name.startswith(".")]
    assert len(exports) == 1 and not list((cache / "onnx").glob(".tmp-*"))
    assert verify_export(cache / "onnx" / exports[0], load_encoder().weights_sha256) is None


def test_cache_shares_interchangeable_backends_and_keeps_int8_apart(by_backend, tmp_path):
    caches = {name: EmbeddingCache(tmp_path, encoder) for name, encoder in by_backend.items()}
    assert caches["torch"].path == caches["onnx"].path != caches["onnx-int8"].path
    assert caches["torch"].path.name == f"embeddings-{by_backend['torch'].weights_sha256[:16]}.sqlite"
    torch_vectors, _, computed = caches["torch"].encode(PASSAGES)
    assert computed == 3
    onnx_vectors, _, computed = caches["onnx"].encode(PASSAGES)
    assert (
        computed == 0 and np.abs(onnx_vectors - by_backend["onnx"].encode(PASSAGES)).max() < FLOAT32_TOLERANCE
    )
    int8_vectors, _, computed = caches["onnx-int8"].encode(PASSAGES)
    assert computed == 3 and not np.allclose(int8_vectors, torch_vectors, atol=1e-3)  # never torch's
    assert caches["onnx-int8"].encode(PASSAGES)[2] == 0  # and its own are reused


def test_compatibility_rule():
    assert compatible("torch", "onnx") and compatible("onnx", "torch") and compatible("torch", "torch")
    vnni, avx2 = "onnx-int8-avx512_vnni", "onnx-int8-avx2"
    assert compatible(vnni, vnni)
    assert not compatible("torch", vnni) and not compatible(vnni, "onnx") and not compatible(vnni, avx2)
    assert incompatibility("onnx", "torch") is None
    message = incompatibility(vnni, "torch")
    assert vnni in message and "torch" in message and "--backend onnx-int8" in message
    assert "rebuild it here" in incompatibility(avx2, vnni)


def small_corpus(folder: Path) -> Path:
    folder.mkdir()
    for name, text in zip("abc", PASSAGES, strict=True):
        (folder / f"{name}.txt").write_text(text)
    return folder


def test_index_records_its_backend_and_refuses_an_incompatible_one(by_backend, tmp_path):
    corpus = small_corpus(tmp_path / "corpus")
    int8 = by_backend["onnx-int8"]
    int8_index, torch_index = tmp_path / "int8", tmp_path / "torch"
    for encoder, index_dir in ((int8, int8_index), (by_backend["torch"], torch_index)):
        build_index([corpus], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig())
        assert Store(index_dir / STORE).config.backend == encoder.backend

    def load(index_dir: Path, encoder: Encoder) -> IndexReader:
        return IndexReader(
            index_dir,
            model_sha256=encoder.weights_sha256,
            dimension=encoder.dimension,
            backend=encoder.backend,
        )

    assert load(int8_index, int8).store.config.backend == int8.backend
    assert load(torch_index, by_backend["onnx"]).store.config.backend == "torch"  # torch and onnx mix
    for index_dir, encoder in ((int8_index, by_backend["torch"]), (torch_index, int8)):
        with pytest.raises(IndexLoadError) as refused:
            load(index_dir, encoder)
        index_backend = int8.backend if index_dir == int8_index else "torch"
        assert f"built with encoder backend {index_backend}" in str(refused.value)
        assert f"encodes with {encoder.backend}" in str(refused.value) and "rebuild" in str(refused.value)
    # A rebuild with an interchangeable backend makes nothing again; with an incompatible one, everything.
    rebuilt = build_index(
        [corpus], index_dir=torch_index, encoder=by_backend["onnx"], chunking=ChunkingConfig()
    )
    assert rebuilt.unchanged == rebuilt.documents and Store(torch_index / STORE).config.backend == "torch"
    rebuilt = build_index([corpus], index_dir=torch_index, encoder=int8, chunking=ChunkingConfig())
    assert rebuilt.unchanged == 0 and Store(torch_index / STORE).config.backend == int8.backend


def test_an_index_of_an_earlier_int8_recipe_is_served_with_a_warning_and_re_embedded_by_a_build(
    by_backend, tmp_path, caplog
):
    """The store records which int8 export recipe made its vectors; an index of an earlier one (before it
    was recorded, or another format) is still served, with a warning saying so, and the next `semqa index`
    re-embeds every passage (the embedding cache keys vectors by recipe, so nothing stale comes back)."""
    corpus = small_corpus(tmp_path / "corpus")
    int8, torch = by_backend["onnx-int8"], by_backend["torch"]
    index_dir = tmp_path / "int8"
    build_index([corpus], index_dir=index_dir, encoder=int8, chunking=ChunkingConfig())
    store = Store(index_dir / STORE)
    assert store.config.int8_format == INT8_FORMAT
    build_index([corpus], index_dir=tmp_path / "torch", encoder=torch, chunking=ChunkingConfig())
    assert Store(tmp_path / "torch" / STORE).config.int8_format is None  # float32 vectors: no recipe
    # ... and no key: a float32 store stays readable by a semqa from before the field existed
    for built, recorded in (("torch", False), ("int8", True)):
        stored = (
            Store(tmp_path / built / STORE)._reader().execute("SELECT value FROM meta WHERE key = 'config'")
        )
        assert ("int8_format" in json.loads(stored.fetchone()[0])) is recorded

    def load() -> IndexReader:
        return IndexReader(
            index_dir, model_sha256=int8.weights_sha256, dimension=int8.dimension, backend=int8.backend
        )

    with caplog.at_level(logging.WARNING, logger="indexer.reader"):
        load()
    assert not caplog.records  # the recipe it was built with: nothing to say
    for earlier, said in (
        (None, "a format it did not record"),
        (INT8_FORMAT - 1, f"format {INT8_FORMAT - 1}"),
    ):
        store.commit([], config=dataclasses.replace(store.config, int8_format=earlier))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="indexer.reader"):
            assert load().view.store.chunk_count > 0  # served
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert said in caplog.text and f"encodes with format {INT8_FORMAT}" in caplog.text
        assert "`semqa index` re-embeds" in caplog.text
    rebuilt = build_index([corpus], index_dir=index_dir, encoder=int8, chunking=ChunkingConfig())
    assert rebuilt.unchanged == 0 and rebuilt.chunks > 0
    assert Store(index_dir / STORE).config.int8_format == INT8_FORMAT
    again = build_index([corpus], index_dir=index_dir, encoder=int8, chunking=ChunkingConfig())
    assert again.unchanged == again.documents  # and once made with this recipe, nothing again


def test_a_write_with_an_incompatible_backend_is_refused(by_backend, tmp_path):
    """What the documents API checks before it commits (server/documents.py): an int8 index takes no
    torch vectors, so nothing is committed."""
    from semqa.settings import Settings
    from server.app import create_app
    from server.retrieval import load_searcher

    index_dir = tmp_path / "int8"
    build_index(
        [small_corpus(tmp_path / "corpus")],
        index_dir=index_dir,
        encoder=by_backend["onnx-int8"],
        chunking=ChunkingConfig(),
    )
    latest = Store(index_dir / STORE).latest()
    settings = Settings(
        index_dir=index_dir,
        cache_dir=tmp_path / "cache",
        api_keys="k",
        reload_interval=0,
        backend="onnx-int8",
    )
    app = create_app(settings, searcher=load_searcher(settings, by_backend["onnx-int8"]))
    app.extensions["semqa.writes"]._encoder = by_backend["torch"]  # as if this worker encoded with torch
    app.extensions["semqa.writes"]._cache = EmbeddingCache(tmp_path / "cache", by_backend["torch"])
    response = app.test_client().post(
        "/documents",
        json={"documents": [{"id": "d", "text": "A new passage about rockets."}]},
        headers={"Authorization": "Bearer k"},
    )
    assert (
        response.status_code == 503
        and "built with encoder backend" in response.get_json()["error"]["message"]
    )
    assert Store(index_dir / STORE).latest() == latest


def test_cli_refuses_to_serve_an_index_of_another_backend(by_backend, tmp_path, capsys):
    corpus = small_corpus(tmp_path / "corpus")
    index_dir = tmp_path / "index"
    build_index([corpus], index_dir=index_dir, encoder=by_backend["onnx-int8"], chunking=ChunkingConfig())
    common = ["--index-dir", str(index_dir), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main(["ask", "Which rocket went to Mars?", "--backend", "torch", *common]) == 1
    error = capsys.readouterr().err
    assert "semqa ask:" in error and "built with encoder backend onnx-int8" in error and "torch" in error


def test_a_store_config_without_backend_reads_as_torch():
    config = StoreConfig(model_name="m", model_sha256="0" * 64, dimension=384, chunking={})
    assert config.backend == "torch"


def test_unknown_backend_is_a_clear_error(capsys):
    with pytest.raises(ValidationError, match="'torch', 'onnx' or 'onnx-int8'"):
        Settings(backend="tensorrt")
    with pytest.raises(ValueError, match="valid backends: torch, onnx, onnx-int8"):
        load_encoder(backend="tensorrt")
    with pytest.raises(SystemExit):
        cli.main(["index", "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_model_that_cannot_be_exported_falls_back_to_torch(tmp_path, encoder, caplog):
    """The packaged weights declared as ERNIE (the same layers as BERT, so transformers loads them and gives
    the same vectors), an architecture optimum's ONNX exporter does not support."""
    model = copy_model(tmp_path / "ernie-minilm")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").unlink()
    (model / "config.json").write_text(
        json.dumps({**config, "model_type": "ernie", "architectures": ["ErnieModel"]})
    )
    with caplog.at_level(logging.WARNING):
        fallback = load_encoder(str(model), backend="onnx", cache_dir=tmp_path / "cache")
    assert fallback.backend == "torch"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "falling back to torch" in warnings[0].getMessage() and "ernie" in warnings[0].getMessage()
    assert np.abs(fallback.encode(PASSAGES) - encoder.encode(PASSAGES)).max() < FLOAT32_TOLERANCE
    assert not [p for p in (tmp_path / "cache" / "onnx").iterdir() if not p.name.startswith(".")]


def test_serve_with_the_onnx_backend_answers_over_http(onnx_encoder, onnx_cache, tmp_path):
    index_dir = tmp_path / "index"
    build_index([CORPUS], index_dir=index_dir, encoder=onnx_encoder, chunking=ChunkingConfig())
    question = "When did Tianwen-1 reach Mars?"
    reader = IndexReader(index_dir, model_sha256=onnx_encoder.weights_sha256, dimension=384, backend="onnx")
    expected = [str(p.chunk.chunk_id) for p in Searcher(onnx_encoder, reader).search(question, 3)]
    args = ["--backend", "onnx", "--index-dir", str(index_dir), "--cache-dir", str(onnx_cache)]
    with running_server(args, env={"SEMQA_QUIET": "1", "SEMQA_RELOAD_INTERVAL": "0"}) as server:
        response = requests.post(server.url + "/ask", json={"question": question, "top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    assert [p["chunk_id"] for p in response.json()["passages"]] == expected  # what onnx gives in process


def test_auto_runs_the_backend_the_index_was_built_with():
    assert Settings().backend == "auto"
    assert resolve_backend("auto", None) == NEW_INDEX_BACKEND == "onnx-int8"  # a new index
    assert resolve_backend("auto", "torch") == "torch"  # indexes from before int8 was the default
    assert resolve_backend("auto", "onnx-int8-avx2") == "onnx-int8"  # this CPU's int8 model, then checked
    assert resolve_backend("onnx", "torch") == "onnx"  # a setting given wins
    with pytest.raises(ValueError, match="valid backends"):
        resolve_backend("tensorrt", None)


def test_a_new_index_is_int8_and_auto_serves_it_over_http(int8_encoder, onnx_cache, tmp_path):
    """No backend named anywhere: `semqa index` builds a new index with int8, and `semqa serve` follows the
    index (a fixed float32 default would refuse it; the corpus index of the other HTTP tests, built with
    torch, is served by torch the same way)."""
    corpus = small_corpus(tmp_path / "corpus")
    index_dir = tmp_path / "index"
    common = ["--index-dir", str(index_dir), "--cache-dir", str(onnx_cache)]
    assert cli.main(["index", str(corpus), "--quiet", *common]) == 0
    assert Store(index_dir / STORE).config.backend == int8_encoder.backend
    question = "Which rocket went to Mars?"
    reader = IndexReader(
        index_dir, model_sha256=int8_encoder.weights_sha256, dimension=384, backend=int8_encoder.backend
    )
    expected = [str(p.chunk.chunk_id) for p in Searcher(int8_encoder, reader).search(question, 2)]
    with running_server(common, env={"SEMQA_QUIET": "1", "SEMQA_RELOAD_INTERVAL": "0"}) as server:
        response = requests.post(server.url + "/ask", json={"question": question, "top_k": 2}, timeout=60)
    assert response.status_code == 200, response.text
    assert [p["chunk_id"] for p in response.json()["passages"]] == expected
