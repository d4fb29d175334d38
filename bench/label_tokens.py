"""Prompt tokens per labeled document, single vs batched, and the share a provider can cache.

A 30-label taxonomy (BANKING77 intents with one-sentence descriptions) labels BANKING77 test
messages. For each layout the exact requests ``tnt label`` would send are built (schema included in
the system message, as when the provider has no native structured output) and counted with
litellm's offline tokenizer for gpt-4o-mini. The cacheable prefix is the system message, which is
byte-identical across every request of a run; the rest (the documents) is new each time.

    .venv/bin/python bench/label_tokens.py [--docs 300] [--batch-sizes 5 10 20]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from tnt.corpus.store import Document
from tnt.labels.labeling import Labeler
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.llm.transports import litellm_module
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel
from tnt.workspace import Workspace

DATA = Path(__file__).resolve().parents[1] / "data" / "banking77"
COUNT_AS = "gpt-4o-mini"
OPENAI_MIN_CACHED_PREFIX = 1024  # OpenAI caches prompts from 1,024 tokens on


def taxonomy_of_30() -> Taxonomy:
    names = json.loads((DATA / "categories.json").read_text())[:30]
    return Taxonomy(
        labels=[
            TaxonomyLabel(
                name=name,
                description=f"The customer asks about {name.replace('_', ' ')}: a question, problem or request about it.",
            )
            for name in names
        ],
        use_case="customer intent in banking support chats",
        version=1,
    )


def documents(count: int) -> list[Document]:
    with (DATA / "test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // count)
    return [Document(f"d{i}", row["text"]) for i, row in enumerate(rows[::step][:count])]


def measure(gateway: Gateway, labeler: Labeler, docs: list[Document], batch_size: int) -> dict[str, float]:
    litellm = litellm_module()
    total = prefix = requests = 0
    for request in labeler.requests(docs, batch_size, batch_max_chars=10_000):
        messages, _ = gateway.prepare(request.messages, request.schema, max_tokens=request.max_tokens)
        total += litellm.token_counter(model=COUNT_AS, messages=messages)
        prefix += litellm.token_counter(model=COUNT_AS, messages=messages[:1])
        requests += 1
    return {
        "requests": requests,
        "per_doc": total / len(docs),
        "prefix": prefix / requests,
        "uncached_per_doc": (total - prefix) / len(docs),
        "cacheable_share": prefix / total,
        # billed input tokens per document when every prefix is a cache hit, at OpenAI's 50 % and
        # Anthropic's 90 % discount on cached tokens (the first request of a run pays in full)
        "billed_50": (total - 0.5 * prefix) / len(docs),
        "billed_90": (total - 0.9 * prefix) / len(docs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args()

    docs = documents(args.docs)
    labeler = Labeler(taxonomy_of_30(), PromptLibrary())
    with tempfile.TemporaryDirectory() as tmp, Workspace.create(tmp) as workspace:
        gateway = Gateway(workspace, LLMSettings(model=COUNT_AS, structured_output="prompt"))
        results = {size: measure(gateway, labeler, docs, size) for size in [1, *args.batch_sizes]}

    base = results[1]
    mean_chars = sum(len(doc.text) for doc in docs) / len(docs)
    print(
        f"{len(docs)} BANKING77 test messages ({mean_chars:.0f} characters on average), 30-label taxonomy + Other,"
    )
    print(f"tokens counted as {COUNT_AS} (litellm, offline); schema in the system message.\n")
    header = (
        f"{'layout':<10}{'requests':>9}{'prompt tok/doc':>16}{'vs single':>11}{'prefix tok':>12}{'cacheable':>11}"
        f"{'uncached tok/doc':>18}{'billed/doc, cache 50% off':>27}{'90% off':>9}"
    )
    print(header)
    print("-" * len(header))
    for size, r in results.items():
        layout = "single" if size == 1 else f"batch {size}"
        print(
            f"{layout:<10}{r['requests']:>9,}{r['per_doc']:>16.1f}{base['per_doc'] / r['per_doc']:>10.1f}x"
            f"{r['prefix']:>12.0f}{r['cacheable_share']:>11.1%}{r['uncached_per_doc']:>18.1f}"
            f"{r['billed_50']:>27.1f}{r['billed_90']:>9.1f}"
        )
    eligible = "is" if base["prefix"] >= OPENAI_MIN_CACHED_PREFIX else "is NOT"
    print(
        f"\nThe static prefix ({base['prefix']:.0f} tokens) {eligible} long enough for OpenAI's automatic prompt "
        f"caching ({OPENAI_MIN_CACHED_PREFIX} tokens); Anthropic needs an explicit cache_control breakpoint."
    )


if __name__ == "__main__":
    main()
