"""The workspace schema, as an ordered list of migrations.

Each migration runs once, atomically with its record (sqlite_utils.Migrations). Append new migrations at the
end; never edit one that has shipped. Each table belongs to one stage module, named in its comment;
other modules go through that module's API, never the table.
"""

from sqlite_utils import Database, Migrations

migrations = Migrations("tnt")


@migrations()
def m001_spine(db: Database) -> None:
    # runs.py: every command that changes state is a run
    db["runs"].create(
        {
            "id": str,
            "kind": str,
            "params": str,
            "status": str,
            "started_at": str,
            "finished_at": str,
            "stats": str,
        },
        pk="id",
    )
    db["run_issues"].create(
        {"id": int, "run_id": str, "place": str, "field": str, "message": str, "created_at": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["run_issues"].create_index(["run_id"])
    # corpus/store.py
    db["documents"].create(
        {
            "id": str,
            "text": str,
            "meta": str,
            "source": str,
            "content_hash": str,
            "n_chars": int,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )
    # llm/gateway.py, llm/log.py: the response cache and the call log
    db["llm_cache"].create(
        {"key": str, "model": str, "response": str, "created_at": str}, pk="key"
    )
    db["llm_calls"].create(
        {
            "id": int,
            "run_id": str,
            "key": str,
            "model": str,
            "stage": str,
            "outcome": str,
            "error": str,
            "attempts": int,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost": float,
            "latency_ms": float,
            "created_at": str,
        },
        pk="id",
    )
    db["llm_calls"].create_index(["run_id"])
    # taxonomy/store.py: every generated, edited or imported label set is a version
    db["taxonomies"].create(
        {
            "version": int,
            "parent": int,
            "method": str,
            "use_case": str,
            "labels": str,
            "content_hash": str,
            "model": str,
            "params": str,
            "prompt_hashes": str,
            "score": float,
            "run_id": str,
            "note": str,
            "created_at": str,
        },
        pk="version",
    )
    # labels/store.py: labels from the LLM, from people and from distilled models
    db["labels"].create(
        {
            "id": int,
            "doc_id": str,
            "taxonomy_version": int,
            "label": str,
            "extra_labels": str,
            "score": float,
            "confidence": float,
            "explanation": str,
            "source": str,
            "origin": str,
            "run_id": str,
            "model": str,
            "prompt_hash": str,
            "created_at": str,
            "retracted_at": str,
        },
        pk="id",
    )
    db["labels"].create_index(["doc_id"])
    db["labels"].create_index(["taxonomy_version", "source"])
    db["labels"].create_index(["run_id"])
    # distill/store.py: trained classifiers (weights live in files beside the database)
    db["models"].create(
        {
            "id": str,
            "taxonomy_version": int,
            "kind": str,
            "target": str,
            "path": str,
            "labels": str,
            "encoder": str,
            "metrics": str,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )


@migrations()
def summarize_001_summaries(db: Database) -> None:
    # taxonomy/summarize.py: use-case-conditioned document summaries, reused across taxonomy runs
    db["summaries"].create(
        {
            "id": int,
            "doc_id": str,
            "key": str,  # hash of (use case, model, prompt hash): one summary per document and key
            "use_case": str,
            "summary": str,
            "explanation": str,
            "model": str,
            "prompt_hash": str,
            "run_id": str,
            "created_at": str,
        },
        pk="id",
    )
    db["summaries"].create_index(["doc_id", "key"], unique=True)


@migrations()
def select_001_selections(db: Database) -> None:
    # select.py: the documents each selection run chose, in output order
    db["selections"].create(
        {
            "run_id": str,
            "position": int,
            "doc_id": str,
            "label": str,
            "source": str,
            "tokens": int,
            "quality": float,
        },
        pk=("run_id", "position"),
        foreign_keys=[("run_id", "runs", "id")],
    )


@migrations()
def labelstudio_001_projects(db: Database) -> None:
    # review/labelstudio.py: the Label Studio projects tnt pushed, each tied to one taxonomy version
    db["ls_projects"].create(
        {
            "project_id": int,
            "url": str,
            "title": str,
            "taxonomy_version": int,
            "multi": int,
            "backend_url": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="project_id",
    )


@migrations()
def review_001_samples(db: Database) -> None:
    # review/sampling.py: documents chosen for human review, with why each was chosen
    db["review_samples"].create(
        {
            "run_id": str,
            "position": int,
            "doc_id": str,
            "taxonomy_version": int,
            "reason": str,
            "detail": str,
        },
        pk=("run_id", "position"),
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["review_samples"].create_index(["doc_id"])


@migrations()
def llm_001_full_calls(db: Database) -> None:
    # llm/log.py: every call in full, so a wrong answer can be traced to what was sent and received
    for column in ("messages", "params", "response", "prompt_name", "prompt_hash"):
        db["llm_calls"].add_column(column, str)


@migrations()
def taxonomy_002_label_map(db: Database) -> None:
    # taxonomy/lineage.py: how a version's labels relate to its parent's (unchanged, renamed, merged, split, ...)
    db["taxonomies"].add_column("label_map", str)


@migrations()
def labels_002_pending(db: Database) -> None:
    # labels/pending.py: documents a migration could not carry to the new version, and why
    db["pending_labels"].create(
        {
            "taxonomy_version": int,
            "doc_id": str,
            "reason": str,  # split | removed | added | other
            "offered": str,  # JSON list of the labels a prompt may offer; null: the whole table
            "old_label": str,
            "sources": str,  # JSON list of the sources whose label did not carry (llm, human, model)
            "run_id": str,
            "created_at": str,
        },
        pk=("taxonomy_version", "doc_id"),
    )


@migrations()
def runs_002_process(db: Database) -> None:
    # runs.py: which process runs a run, so one whose process died shows as interrupted
    db["runs"].add_column("pid", int)
    db["runs"].add_column("host", str)
    db["runs"].add_column("heartbeat_at", str)


@migrations()
def audit_001_samples(db: Database) -> None:
    # review/audit.py: the stratified samples of the tagged corpus that people check blind
    db["audit_samples"].create(
        {
            "run_id": str,
            "position": int,
            "doc_id": str,
            "taxonomy_version": int,
            "model_id": str,
            "predicted": str,
        },
        pk=("run_id", "position"),
        foreign_keys=[("run_id", "runs", "id")],
    )


@migrations()
def llm_002_failed_attempts(db: Database) -> None:
    # llm/stage.py: each failed attempt at a document, so a rerun asks again, up to --max-attempts
    db["failed_attempts"].create(
        {
            "stage": str,  # label | score-quality
            "scope": str,  # hash of what makes two runs ask the same way (model, prompt, taxonomy version)
            "doc_id": str,
            "attempt": int,  # 1, 2, ...
            "outcome": str,  # invalid (answered, not validly) | error (no answer: retries ran out)
            "reason": str,
            "run_id": str,
            "created_at": str,
        },
        pk=("stage", "scope", "doc_id", "attempt"),
    )


@migrations()
def labels_003_migrated_from(db: Database) -> None:
    # labels/migrate.py: a label carried to a new taxonomy version names the row it was carried from
    db["labels"].add_column("migrated_from", int)
    db["labels"].create_index(["migrated_from"])


@migrations()
def runs_003_resumes(db: Database) -> None:
    # runs.py: the interrupted run (same kind and params) a run takes up again
    db["runs"].add_column("resumes", str)


@migrations()
def pii_001_scans(db: Database) -> None:
    # pii.py: the personal data each document holds, per entity type, as `tnt scan pii` found it
    db["pii_scans"].create(
        {
            "doc_id": str,
            "entities": str,  # JSON {entity type: occurrences}; {} when none
            "detector": str,  # what found them (Presidio version, spaCy pipeline): another one rescans
            "run_id": str,
            "scanned_at": str,
        },
        pk="doc_id",
    )
