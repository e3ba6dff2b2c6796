"""The ``semqa`` command line: index, serve, mcp, ask, eval.

Every flag maps to a ``Settings`` field; an unset flag leaves the environment or default value.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from semqa.evaluation import DEEP_TOP_K, SERVED_TOP_K
from semqa.settings import BACKEND_SETTINGS, ENGINES, FUSIONS, MODES, RANKINGS, Settings, unknown_variables

if TYPE_CHECKING:  # the heavy imports wait until a command needs them, so `semqa --help` is instant
    from embeddings import Encoder
    from indexer import BuildReport
    from semqa.evaluation import SearchFn
    from server.retrieval import Searcher

log = logging.getLogger("semqa")


def _add_index_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index-dir", type=Path, help="index directory (SEMQA_INDEX_DIR)")
    parser.add_argument("--model", help="sentence-transformers model folder (SEMQA_MODEL)")
    parser.add_argument("--cache-dir", type=Path, help="embedding cache folder (SEMQA_CACHE_DIR)")
    parser.add_argument("--chunk-tokens", type=int, help="chunk size in model tokens (SEMQA_CHUNK_TOKENS)")
    parser.add_argument("--chunk-overlap", type=int, help="chunk overlap in tokens (SEMQA_CHUNK_OVERLAP)")
    parser.add_argument("--faiss-factory", help="FAISS index_factory string (SEMQA_FAISS_FACTORY)")
    parser.add_argument("--batch-size", type=int, help="encoding batch size (SEMQA_BATCH_SIZE)")
    parser.add_argument(
        "--backend",
        choices=BACKEND_SETTINGS,
        help="encoder backend (SEMQA_BACKEND, default auto: the index's own, onnx-int8 for a new one)",
    )
    parser.add_argument("--quiet", action="store_true", default=None, help="no progress bars (SEMQA_QUIET)")
    parser.add_argument("--fusion", choices=FUSIONS, help="hybrid fusion (SEMQA_FUSION)")
    parser.add_argument("--fusion-alpha", type=float, help="dense weight in the fusion (SEMQA_FUSION_ALPHA)")
    parser.add_argument("--candidates", type=int, help="candidates per retriever (SEMQA_CANDIDATES)")
    parser.add_argument("--ranking", choices=RANKINGS, help="hybrid ranking: model or fusion (SEMQA_RANKING)")
    parser.add_argument(
        "--highlight-alpha", type=float, help="dense weight in highlights (SEMQA_HIGHLIGHT_ALPHA)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semqa", description="Semantic question answering over documents.")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build a new index version from documents")
    index.add_argument(
        "paths", nargs="*", type=Path, help="files or folders (default: SEMQA_CORPUS, corpus/)"
    )
    _add_index_flags(index)
    index.add_argument("--engine", choices=ENGINES, help="local (default) or ray (SEMQA_ENGINE)")
    index.add_argument(
        "--ray-address", help="Ray cluster, e.g. auto; default: a local instance (SEMQA_RAY_ADDRESS)"
    )
    index.add_argument("--ray-num-gpus", type=int, help="GPU actors, one GPU each (SEMQA_RAY_NUM_GPUS)")
    index.add_argument("--ray-workers", type=int, help="CPU actors; 0 = one per CPU (SEMQA_RAY_WORKERS)")
    index.add_argument(
        "--ray-shard-chars", type=int, help="text per Parquet shard, in characters (SEMQA_RAY_SHARD_CHARS)"
    )

    serve = commands.add_parser("serve", help="serve the HTTP API with gunicorn (indexes first if needed)")
    _add_index_flags(serve)
    serve.add_argument("--host", help="address to bind (SEMQA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (SEMQA_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (SEMQA_WORKERS, default 1)")
    serve.add_argument("--threads", type=int, help="threads per worker (SEMQA_THREADS, default 64)")

    mcp = commands.add_parser("mcp", help="serve the index to assistants over MCP (stdio, or --http)")
    _add_index_flags(mcp)
    mcp.add_argument("--http", action="store_true", help="streamable HTTP on --host/--port, path /mcp")
    mcp.add_argument("--host", help="with --http: address to bind (SEMQA_HOST, default 127.0.0.1)")
    mcp.add_argument("--port", type=int, help="with --http: port (SEMQA_PORT, default 8000)")

    ask = commands.add_parser("ask", help="answer one question from the index, locally")
    ask.add_argument("question")
    ask.add_argument("-k", "--top-k", type=_positive, default=5, help="passages to print (default 5)")
    ask.add_argument("--mode", choices=MODES, default="hybrid")
    _add_index_flags(ask)

    compact = commands.add_parser(
        "compact", help="fold written passages into a new generation (the service keeps answering)"
    )
    compact.add_argument("--index-dir", type=Path, help="index directory (SEMQA_INDEX_DIR)")
    compact.add_argument("--faiss-factory", help="FAISS index_factory string (SEMQA_FAISS_FACTORY)")
    compact.add_argument("--quiet", action="store_true", default=None, help="(accepted for symmetry)")

    evaluate = commands.add_parser("eval", help="measure retrieval quality")
    evaluate.add_argument("--questions", type=Path, help="TSV with doc, question, evidence columns")
    evaluate.add_argument(
        "--corpus", type=Path, help="corpus for --questions (default SEMQA_CORPUS, corpus/)"
    )
    evaluate.add_argument("--beir", type=Path, help="BEIR dataset folder")
    evaluate.add_argument("--split", default="test", help="BEIR split (default test)")
    evaluate.add_argument(
        "--mode",
        choices=MODES,
        action="append",
        help="modes to measure (default: all three)",
    )
    evaluate.add_argument(
        "--deep",
        action="store_true",
        help=f"BEIR: also ask for {DEEP_TOP_K} documents per query for Recall@{DEEP_TOP_K} (labelled "
        f"'top_k={DEEP_TOP_K}': deeper than the served top_k={SERVED_TOP_K}, so the searcher fuses more "
        "candidates than /ask does)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    _add_index_flags(evaluate)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    fields = set(Settings.model_fields)
    return Settings.from_flags(**{k: v for k, v in vars(args).items() if k in fields})


def _progress(settings: Settings) -> bool:
    return not settings.quiet and sys.stderr.isatty()


def _build(
    settings: Settings, paths: Sequence[Path], index_dir: Path, encoder: Encoder | None = None
) -> None:
    from embeddings import EmbeddingCache
    from indexer import ChunkingConfig, build_index
    from indexer.parquet import embedded_backend
    from server.retrieval import configured_encoder
    from server.retrieval.load import configured_backend

    if encoder is None:  # auto builds a new index of embedded passages with a backend their vectors mix with
        backend = configured_backend(settings, index_dir, new_index=embedded_backend(paths))
        encoder = configured_encoder(settings, index_dir, backend=backend)
    report = build_index(
        paths,
        index_dir=index_dir,
        encoder=encoder,
        chunking=ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap),
        faiss_factory=settings.faiss_factory,
        cache=EmbeddingCache(settings.cache_dir, encoder),
        batch_size=settings.batch_size,
        progress=_progress(settings),
    )
    _print_report(report)


def _print_report(report: BuildReport) -> None:
    for skipped in report.skipped:
        print(f"skipped {skipped.source}: {skipped.reason}", file=sys.stderr)
    imported = f"{report.imported} from Parquet, " if report.imported else ""
    api = (
        f" and {report.api_documents} API-written document{'s' if report.api_documents != 1 else ''} made "
        f"again into {report.api_chunks} chunks"
        if report.api_documents
        else ""
    )
    cached = report.chunks + report.api_chunks - report.embedded - report.imported
    print(
        f"indexed {report.documents} documents into {report.chunks} chunks{api} ({report.embedded} embedded, "
        f"{imported}{cached} from cache; {report.unchanged} documents unchanged, kept as they were), "
        f"{len(report.skipped)} skipped, {report.seconds:.1f} s, {report.chunks_per_second:.1f} chunks/s "
        f"(encoder backend {report.backend}) -> {report.generation_dir}",
        file=sys.stderr,
    )


def _build_with_ray(settings: Settings, paths: Sequence[Path]) -> None:
    from functools import partial

    from embeddings import load_encoder
    from embeddings.backends import backend_setting, compatible
    from indexer import ChunkingConfig
    from indexer.parquet import embedded_backend
    from indexer.ray_build import RayBuildError, RayOptions, build_index_with_ray
    from server.retrieval import configured_encoder
    from server.retrieval.load import configured_backend

    # Each CPU actor holds one CPU, so one thread, and runs the backend this process runs (``auto`` resolved
    # here, against the index being built). GPU actors run torch on their GPU (onnxruntime runs on the CPU
    # here): a new index is then a float32 one, and an int8 index cannot take their vectors.
    gpus = settings.ray_num_gpus > 0
    new_index = "torch" if gpus else embedded_backend(paths)
    backend = configured_backend(settings, settings.index_dir, new_index=new_index)
    if gpus and not compatible(backend, "torch"):
        raise RayBuildError(
            f"GPU actors run torch, whose vectors an {backend} index cannot take: build with --backend torch "
            "into a fresh index directory, or without --ray-num-gpus"
        )
    encoder = configured_encoder(settings, settings.index_dir, backend=backend)
    result = build_index_with_ray(
        paths,
        index_dir=settings.index_dir,
        encoder=encoder,
        load_encoder=partial(
            load_encoder,
            settings.model,
            settings.model_sha256,
            threads=1,
            backend="torch" if gpus else backend_setting(encoder.backend),
            cache_dir=settings.cache_dir,
            device="cuda" if gpus else "cpu",
        ),
        chunking=ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap),
        options=RayOptions(
            address=settings.ray_address,
            num_gpus=settings.ray_num_gpus,
            workers=settings.ray_workers,
            shard_chars=settings.ray_shard_chars,
        ),
        cache_dir=settings.cache_dir,
        faiss_factory=settings.faiss_factory,
        batch_size=settings.batch_size,
        progress=_progress(settings),
    )
    print(
        f"ray: {result.shards} shards ({result.shards_reused} already done) in {result.shards_dir}",
        file=sys.stderr,
    )
    _print_report(result.build)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    paths = args.paths or [settings.corpus]
    if settings.engine == "ray":
        _build_with_ray(settings, paths)
    else:
        _build(settings, paths, settings.index_dir)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import check_index, has_index
    from indexer.writer import recover_index
    from server.keys import KeyRing

    # Metrics from every worker, aggregated: prometheus-client reads this when it is first imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="semqa-metrics-"))
    from server.runner import serve

    if not has_index(settings.index_dir):
        # In a child process: gunicorn forks its workers from this one, and torch's OpenMP runtime must
        # not be started in a process that forks.
        print(f"no index in {settings.index_dir}; indexing {settings.corpus} first", file=sys.stderr)
        command = [sys.executable, "-m", "semqa.cli", "index", str(settings.corpus)]
        if subprocess.run(command, check=False, env={**os.environ, **settings.environment()}).returncode:
            return 1
    check_index(settings.index_dir)  # a damaged index stops here, with the file's name, before any worker
    recover_index(settings.index_dir)  # a write that a crash left half-applied is finished now
    KeyRing.from_settings(settings)  # and so does a key file that cannot be read, with the line
    serve(settings)
    return 0


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    if not args.http and (args.host is not None or args.port is not None):
        print("semqa mcp: --host and --port need --http (the default transport is stdio)", file=sys.stderr)
        return 2
    from server.mcp_server import serve_mcp

    serve_mcp(settings, http=args.http)
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from server.retrieval import SearchOptions, load_searcher
    from server.text_input import blank

    if blank(args.question):
        raise ValueError("the question is blank: ask something")
    passages = load_searcher(settings).search(args.question, args.top_k, SearchOptions(mode=args.mode))
    for rank, passage in enumerate(passages, 1):
        chunk = passage.chunk
        print(f"[{rank}] {passage.score:.3f}  {chunk.document_id} [{chunk.start}:{chunk.end}]  {chunk.title}")
        print("    " + chunk.text.replace("\n", " ")[:500])
    return 0


@contextmanager
def _scratch_searcher(settings: Settings, paths: Sequence[Path], encoder: Encoder) -> Iterator[Searcher]:
    """A throwaway index of ``paths`` with exactly these settings (the embedding cache makes it cheap)."""
    from server.retrieval import load_searcher

    with tempfile.TemporaryDirectory(prefix="semqa-eval-") as scratch:
        scratch_settings = settings.model_copy(update={"index_dir": Path(scratch)})
        _build(scratch_settings, paths, Path(scratch), encoder)
        yield load_searcher(scratch_settings, encoder)


def _eval_search(searcher: Searcher, mode: str, beir: bool = False) -> SearchFn:
    """The searcher as the metrics call it; BEIR ranks documents, so one passage each and no highlights."""
    from semqa.evaluation import Retrieved
    from server.retrieval import SearchOptions

    options = SearchOptions(mode=mode, group_by_document=beir, highlight=not beir)  # type: ignore[arg-type]

    def search(questions: Sequence[str], k: int) -> list[list[Retrieved]]:
        return [
            [
                Retrieved(p.chunk.document_id, p.chunk.text, p.highlight.text if p.highlight else None)
                for p in ps
            ]
            for ps in searcher.search_batch(questions, k, options)
        ]

    return search


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from semqa import evaluation
    from server.retrieval import configured_encoder

    if not args.questions and not args.beir:
        print("semqa eval: give --questions FILE.tsv and/or --beir DIR", file=sys.stderr)
        return 2
    modes = args.mode or ["dense", "lexical", "hybrid"]
    encoder = configured_encoder(settings, None)  # scratch indexes: what a new index is built with
    results: dict[str, dict[str, float]] = {}
    if args.questions:
        questions = evaluation.read_questions(args.questions)
        with _scratch_searcher(settings, [args.corpus or settings.corpus], encoder) as searcher:
            for mode in modes:
                results[f"questions/{mode}"] = evaluation.evidence_metrics(
                    questions, _eval_search(searcher, mode)
                )
    if args.beir:
        data = evaluation.read_beir(args.beir, args.split)
        with _scratch_searcher(settings, [data.corpus], encoder) as searcher:
            for mode in modes:
                search = _eval_search(searcher, mode, beir=True)
                name = f"beir:{args.beir.name}/{args.split}/{mode}"
                results[name] = evaluation.beir_metrics(data, search, SERVED_TOP_K)
                if args.deep:
                    results[f"{name}/top_k={DEEP_TOP_K}"] = evaluation.beir_metrics(data, search, DEEP_TOP_K)
    config = {
        "backend": encoder.backend,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "fusion": settings.fusion,
        "fusion_alpha": settings.fusion_alpha,
        "highlight_alpha": settings.highlight_alpha,
        "candidates": settings.candidates,
        "ranking": settings.ranking,
        # as /ask is asked: top_k passages for the questions; top_k documents (group_by_document) for BEIR
        "top_k": SERVED_TOP_K,
    }
    if args.json:
        print(json.dumps({"settings": config, **results}))
        return 0
    print(f"settings: {config}")
    for name, metrics in results.items():
        print(
            f"{name}: "
            + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        )
    return 0


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    from embeddings.files import Busy
    from indexer import IndexLoadError, has_index
    from indexer.compact import compact

    if not has_index(settings.index_dir):  # checked before compact takes its lock, which makes the folder
        raise IndexLoadError(f"no index in {settings.index_dir}: build one with `semqa index`")
    try:
        report = compact(settings.index_dir, settings.faiss_factory)
    except Busy:
        print("semqa compact: a compaction or build is already running; nothing to do", file=sys.stderr)
        return 0
    print(
        f"compacted into generation {report.generation}: {report.passages} passages "
        f"({report.folded} written since the last one folded in, {report.purged} deleted rows purged), "
        f"index version {report.seq}, {report.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


COMMANDS = {
    "index": cmd_index,
    "serve": cmd_serve,
    "mcp": cmd_mcp,
    "ask": cmd_ask,
    "eval": cmd_eval,
    "compact": cmd_compact,
}


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    from embeddings import ModelError
    from indexer import CorpusError, IndexLoadError
    from indexer.ray_build import RayBuildError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    for warning in unknown_variables(os.environ):
        print(f"semqa: warning: {warning}", file=sys.stderr)
    try:
        settings = settings_from_args(args)
        return COMMANDS[args.command](args, settings)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            where = f"SEMQA_{name.upper()}" if name else "setting"  # or its flag
            print(f"semqa: invalid {where}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
    except (CorpusError, IndexLoadError, ModelError, RayBuildError, OSError, ValueError) as exc:
        print(f"semqa {args.command}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
