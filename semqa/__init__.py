"""semqa: semantic question answering over a document corpus.

This package holds the cross-cutting pieces: the typed settings and the ``semqa`` command line.
The work itself lives in ``indexer`` (read, chunk, build), ``embeddings`` (encode) and ``server`` (serve).
"""

__version__ = "0.1.0"
