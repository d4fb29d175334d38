"""`tnt select`: quotas, caps, temperature mix, quality floor, dedup, token budget, determinism."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.labels.store import LabelRecord, LabelStore
from tnt.select import SelectionError, SelectionSpec, allocate, select
from tnt.selection_io import load_selection
from tnt.taxonomy.store import TaxonomyStore
from tnt.workspace import Workspace

SUPPLY = {"alpha": 60, "beta": 30, "gamma": 10}
_LETTERS = random.Random(0)
VOCABULARY = ["".join(_LETTERS.choices("abcdefghijklmnopqrstuvwxyz", k=7)) for _ in range(3000)]


def random_text(rng: random.Random, words: int = 14) -> str:
    """Texts built from random 7-letter words share almost no character 5-grams: never near duplicates."""
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def corpus_rows(supply: dict[str, int] = SUPPLY, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"id": f"{label}-{i:03d}", "text": random_text(rng, rng.randint(5, 30)), "label": label}
        for label, n in supply.items()
        for i in range(n)
    ]


def ingest_rows(workspace: Workspace, rows: list[dict[str, str]], path: Path) -> int:
    """Documents plus their labels (as imported human labels); returns the taxonomy version."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    workspace.ingest([path], id_field="id", label_field="label", on_error="fail")
    return TaxonomyStore(workspace).get().version


@pytest.fixture
def corpus(workspace: Workspace, tmp_path: Path) -> Workspace:
    ingest_rows(workspace, corpus_rows(), tmp_path / "corpus.jsonl")
    return workspace


def label_mix(selection) -> Counter:
    return Counter(candidate.label for candidate in selection.selected)


def test_quotas_and_caps_are_honoured_exactly(corpus: Workspace) -> None:
    selection = select(corpus, SelectionSpec(quotas={"alpha": 7, "gamma": 10}, caps={"beta": 4}, dedup="none"))
    assert label_mix(selection) == {"alpha": 7, "beta": 4, "gamma": 10}

    capped = select(corpus, SelectionSpec(max_per_label=12, caps={"beta": 5}, dedup="none"))
    assert label_mix(capped) == {"alpha": 12, "beta": 5, "gamma": 10}

    with_size = select(corpus, SelectionSpec(quotas={"gamma": 3}, caps={"alpha": 20}, size=50, dedup="none"))
    mix = label_mix(with_size)
    assert mix["gamma"] == 3 and mix["alpha"] <= 20 and sum(mix.values()) == 50


def test_quota_beyond_supply_fails_naming_the_label(corpus: Workspace) -> None:
    with pytest.raises(SelectionError, match="quota for label 'gamma' is 11 documents, but only 10"):
        select(corpus, SelectionSpec(quotas={"gamma": 11}))
    with pytest.raises(SelectionError, match="not in the taxonomy: 'gama'"):
        select(corpus, SelectionSpec(caps={"gama": 1}))
    with pytest.raises(ValueError, match="quota 5 is above its cap 4"):
        SelectionSpec(quotas={"beta": 5}, caps={"beta": 4})
    with pytest.raises(ValueError, match="temperature needs a total"):
        SelectionSpec(temperature=0.5)


def test_temperature_zero_gives_a_uniform_mix_where_supply_allows(corpus: Workspace) -> None:
    assert label_mix(select(corpus, SelectionSpec(size=24, temperature=0))) == {"alpha": 8, "beta": 8, "gamma": 8}
    # gamma has only 10: it gives them all, and alpha and beta share the rest evenly
    mix = label_mix(select(corpus, SelectionSpec(size=45, temperature=0)))
    assert mix["gamma"] == 10 and sorted([mix["alpha"], mix["beta"]]) == [17, 18]
    too_many = select(corpus, SelectionSpec(size=150, temperature=0, caps={"alpha": 50}))
    assert label_mix(too_many) == {"alpha": 50, "beta": 30, "gamma": 10}
    assert too_many.shortfall == "asked for 150 documents; only 90 are eligible under these rules"
    assert [i["field"] for i in corpus.runs.issues(too_many.run_id)] == ["size"]


def test_temperature_one_keeps_the_natural_mix_and_half_flattens_it(corpus: Workspace) -> None:
    assert label_mix(select(corpus, SelectionSpec(size=50, temperature=1))) == {"alpha": 30, "beta": 15, "gamma": 5}
    half = label_mix(select(corpus, SelectionSpec(size=50, temperature=0.5)))
    # p ∝ sqrt(n): 60, 30, 10 → 23.64, 16.71, 9.65 of 50; the two largest remainders round up
    assert half == {"alpha": 23, "beta": 17, "gamma": 10}


def test_allocate_hands_a_short_labels_share_to_the_others() -> None:
    shares = allocate(90, {"a": 1, "b": 1, "c": 1}, {"a": 100, "b": 5, "c": 100})
    assert shares == {"a": 42.5, "b": 5, "c": 42.5}
    assert allocate(500, {"a": 1, "b": 1}, {"a": 10, "b": 20}) == {"a": 10, "b": 20}


def test_token_budget_is_never_exceeded_and_mixes_by_temperature(corpus: Workspace) -> None:
    everything = select(corpus, SelectionSpec(dedup="none"))
    budget = everything.tokens // 4
    selection = select(corpus, SelectionSpec(token_budget=budget, temperature=0))
    assert 0 < selection.tokens <= budget
    assert selection.tokens >= budget - 3 * max(
        c.tokens for c in everything.selected
    )  # at most one doc short per label
    tokens = {label: values["tokens"] for label, values in selection.after.items()}
    assert max(tokens.values()) - min(tokens.values()) <= max(c.tokens for c in everything.selected)


def test_whitespace_and_tiktoken_counts(corpus: Workspace) -> None:
    words = select(corpus, SelectionSpec(tokenizer="whitespace", dedup="none"))
    assert words.tokens == sum(len(row["text"].split()) for row in corpus_rows())
    tiktoken = select(corpus, SelectionSpec(tokenizer="cl100k_base", dedup="none"))
    assert tiktoken.tokens > words.tokens  # random 7-letter words split into several BPE pieces
    with pytest.raises(SelectionError, match="tokenizer 'no_such_encoding'"):
        select(corpus, SelectionSpec(tokenizer="no_such_encoding"))


def shingles(text: str) -> set[str]:
    text = " ".join(text.lower().split())
    return {text[i : i + 5] for i in range(len(text) - 4)}


def jaccard(a: str, b: str) -> float:
    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


def test_planted_near_duplicates_are_removed(workspace: Workspace, tmp_path: Path) -> None:
    rows = corpus_rows()
    originals = {row["id"]: row["text"] for row in rows if len(row["text"].split()) >= 20}
    planted, different = [], []
    for n, (doc_id, text) in enumerate(list(originals.items())[:9]):
        words = text.split()
        if n % 3 == 0:  # the same text, shouted and re-spaced: an exact duplicate after normalisation
            copy = "  ".join(words).upper()
        elif n % 3 == 1:  # one word replaced
            copy = " ".join(words[:-1] + ["changed"])
        else:  # a typo in the middle and trailing punctuation
            copy = text[: len(text) // 2] + "x" + text[len(text) // 2 + 1 :] + "."
            assert 0.8 < jaccard(copy, text) < 1
        planted.append({"id": f"copy-of-{doc_id}", "text": copy, "label": doc_id.split("-")[0]})
        # half the words shared: related, but not a near duplicate (Jaccard well under 0.8)
        half = " ".join(words[: len(words) // 2] + [w[::-1] for w in words[len(words) // 2 :]])
        assert jaccard(half, text) < 0.6
        different.append({"id": f"half-of-{doc_id}", "text": half, "label": doc_id.split("-")[0]})
    ingest_rows(workspace, rows + planted + different, tmp_path / "corpus.jsonl")

    selection = select(workspace, SelectionSpec())
    chosen = {c.doc_id for c in selection.selected}
    assert not {row["id"] for row in planted} & chosen
    assert set(originals) | {row["id"] for row in different} <= chosen
    funnel = selection.funnel
    assert funnel["exact_duplicates"] == 3 and funnel["near_duplicates"] == 6
    assert funnel["unique"] == len(rows) + len(different) == len(chosen)

    exact_only = select(workspace, SelectionSpec(dedup="exact"))
    assert exact_only.funnel["exact_duplicates"] == 3 and exact_only.funnel["near_duplicates"] == 0
    assert len(select(workspace, SelectionSpec(dedup="none")).selected) == len(rows) + len(planted) + len(different)


def test_same_seed_gives_the_same_selection_in_any_storage_order(tmp_path: Path) -> None:
    rows = corpus_rows()
    spec = SelectionSpec(size=40, temperature=0.3, seed=7)
    with Workspace.create(tmp_path / "a") as first, Workspace.create(tmp_path / "b") as second:
        ingest_rows(first, rows, tmp_path / "a.jsonl")
        ingest_rows(second, rows[::-1], tmp_path / "b.jsonl")
        ids = [c.doc_id for c in select(first, spec).selected]
        assert ids == [c.doc_id for c in select(first, spec).selected]
        assert ids == [c.doc_id for c in select(second, spec).selected]
        other_seed = [c.doc_id for c in select(first, spec.model_copy(update={"seed": 8})).selected]
    assert set(other_seed) != set(ids) and len(other_seed) == len(ids) == 40


def test_minimum_quality_keeps_scored_documents_at_or_above_it(corpus: Workspace) -> None:
    rng = random.Random(3)
    scores = {row["id"]: round(rng.random(), 3) for row in corpus_rows()[::2]}  # half the corpus scored
    LabelStore(corpus).add(
        LabelRecord(doc_id=doc_id, source="llm", score=score, origin="ask-llm:abc") for doc_id, score in scores.items()
    )
    LabelStore(corpus).add([LabelRecord(doc_id="alpha-001", source="llm", score=0.99, origin="edu-score:def")])
    selection = select(corpus, SelectionSpec(min_quality=0.5, quality_origin="ask-llm"))
    assert {c.doc_id for c in selection.selected} == {d for d, s in scores.items() if s >= 0.5}
    assert all(c.quality >= 0.5 for c in selection.selected)
    assert selection.quality_origins == {"ask-llm:abc": len(scores)}
    with pytest.raises(SelectionError, match="no document has a quality score with origin 'nope'"):
        select(corpus, SelectionSpec(min_quality=0.5, quality_origin="nope"))


def test_label_precedence_is_human_then_model_then_llm(corpus: Workspace) -> None:
    version = TaxonomyStore(corpus).get().version
    store = LabelStore(corpus)
    store.add(
        [
            LabelRecord(doc_id="alpha-000", source="model", label="beta", taxonomy_version=version),
            LabelRecord(doc_id="alpha-000", source="llm", label="gamma", taxonomy_version=version),
        ]
    )
    labels = {c.doc_id: (c.label, c.source) for c in select(corpus, SelectionSpec(dedup="none")).selected}
    assert labels["alpha-000"] == ("alpha", "human")
    by_model = {
        c.doc_id: (c.label, c.source)
        for c in select(corpus, SelectionSpec(precedence=("model", "llm"), dedup="none")).selected
    }
    assert by_model == {"alpha-000": ("beta", "model")}
    by_llm = select(corpus, SelectionSpec(precedence=("llm", "model"), dedup="none")).selected
    assert [(c.doc_id, c.label, c.source) for c in by_llm] == [("alpha-000", "gamma", "llm")]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_selection_is_recorded_and_written(corpus: Workspace, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"selection{suffix}"
    selection = select(corpus, SelectionSpec(size=20, temperature=0), out=out)
    ids = [c.doc_id for c in selection.selected]
    texts = {row["id"]: row["text"] for row in corpus_rows()}
    if suffix == ".txt":
        assert out.read_text().split() == ids
    else:
        records = (
            [json.loads(line) for line in out.read_text().splitlines()]
            if suffix == ".jsonl"
            else pq.read_table(out).to_pylist()
        )
        assert [r["id"] for r in records] == ids
        assert all(r["text"] == texts[r["id"]] and r["label"] == r["id"].split("-")[0] for r in records)
        assert sum(r["tokens"] for r in records) == selection.tokens
    run, recorded = load_selection(corpus)
    assert run["id"] == selection.run_id and run["stats"]["selected_docs"] == 20
    assert [c.doc_id for c in recorded] == ids
    with pytest.raises(SelectionError):
        select(corpus, SelectionSpec(quotas={"gamma": 99}), out=out)
    assert load_selection(corpus)[0]["id"] == selection.run_id  # a failed run is not "the latest selection"
    assert not list(tmp_path.glob("*.partial"))


def test_cli_select_prints_the_mix_before_and_after(corpus: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "selection.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "select",
            "-w",
            str(corpus.directory),
            "--size",
            "30",
            "-T",
            "0",
            "--quota",
            "gamma=4",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "docs before" in result.output and "near_duplicates" in result.output
    assert "Wrote 30 documents" in result.output
    assert Counter(json.loads(line)["label"] for line in out.read_text().splitlines()) == {
        "alpha": 13,
        "beta": 13,
        "gamma": 4,
    }

    bad = CliRunner().invoke(app, ["select", "-w", str(corpus.directory), "--quota", "gamma"])
    assert bad.exit_code == 1 and "--quota 'gamma': expected LABEL=N" in bad.output
    conflict = CliRunner().invoke(app, ["select", "-w", str(corpus.directory), "--size", "5", "--token-budget", "9"])
    assert conflict.exit_code == 1 and "either size (documents) or token_budget" in conflict.output
    short = CliRunner().invoke(app, ["select", "-w", str(corpus.directory), "--quota", "gamma=99"])
    assert short.exit_code == 1 and "only 10 are eligible" in short.output
