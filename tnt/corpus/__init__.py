"""Stage 0, the corpus: documents imported from files, and how every other stage reads them.

- ``tnt.corpus.ingest``: ``ingest`` streams JSON Lines, CSV/TSV, Parquet, Arrow and ``datasets``
  directories into the ``documents`` table (``Workspace.ingest`` also stores ``--label-field`` values);
- ``tnt.corpus.readers``: the file formats, row by row, each problem naming file, line and field;
- ``tnt.corpus.store``: ``DocumentStore`` (``ws.documents``) and ``select_documents``.

The corpus knows nothing of labels or taxonomies; they build on it.
"""
