"""What masking personal data costs per 1,000 documents, against building the same prompts unmasked.

For BANKING77 test messages, plain and with PII planted (e-mail addresses, phone numbers, Luhn-valid
card numbers, checksum-valid IBANs, names; the generator of tests/test_pii.py), the exact labeling
requests ``tnt label`` sends are built with ``Gateway.prepare``: once with ``pii="off"`` (the
baseline: rendering the prompt and the schema) and once with ``pii="mask"``. The engine is built
(and its patterns compiled) before the clock starts; its one-off cost is printed on its own. Times
are CPU times of this process.

    .venv/bin/python bench/pii_masking.py [--docs 1000]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.test_pii import planted_documents
from tnt import pii
from tnt.corpus.store import Document
from tnt.labels.labeling import Labeler
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel
from tnt.workspace import Workspace

DATA = REPO_ROOT / "data" / "banking77"


def banking77_test() -> dict[str, list[tuple[str, str]]]:
    with (DATA / "test.csv").open(encoding="utf-8") as handle:
        return {"test": [(row["text"], row["category"]) for row in csv.DictReader(handle)]}


def prepare_all(gateway: Gateway, labeler: Labeler, docs: list[Document]) -> float:
    """CPU seconds to build every document's request as ``complete`` would send it (CPU, not wall:
    on a shared machine the wall clock mostly measures the other jobs)."""
    started = time.process_time()
    for doc in docs:
        request = labeler.request([doc])
        gateway.prepare(request.messages, request.schema, max_tokens=request.max_tokens)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()

    rows = banking77_test()
    planted = planted_documents(rows, count=args.docs)
    corpora = {
        "plain": [Document(f"p{i}", d.base) for i, d in enumerate(planted)],
        "with PII": [Document(f"q{i}", d.text) for i, d in enumerate(planted)],
    }
    categories = sorted({d.category for d in planted})[:30]
    taxonomy = Taxonomy(labels=[TaxonomyLabel(name=c, description=f"About {c.replace('_', ' ')}.") for c in categories], version=1)
    labeler = Labeler(taxonomy, PromptLibrary())

    started, cpu = time.perf_counter(), time.process_time()
    pii.mask(corpora["with PII"][0].text)  # builds the engine, compiles its patterns
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"engine build (once per process): {build_s:.1f} s wall, {build_cpu:.1f} s CPU; {pii.detector()}")

    with tempfile.TemporaryDirectory() as directory, Workspace.create(Path(directory) / "ws") as workspace:
        settings = {"model": "openai/bench", "api_base": "http://127.0.0.1:9/v1"}
        unmasked = Gateway(workspace, LLMSettings(**settings, pii="off"))
        masked = Gateway(workspace, LLMSettings(**settings, pii="mask"))
        prepare_all(masked, labeler, corpora["with PII"][:50])  # warm both paths
        prepare_all(unmasked, labeler, corpora["plain"][:50])
        per_1k = 1000 / args.docs
        print(f"{'documents':<10} {'prepare, pii=off':>18} {'prepare, pii=mask':>19} {'ratio':>7}  (CPU ms per 1,000 docs)")
        for name, docs in corpora.items():
            baseline = prepare_all(unmasked, labeler, docs) * 1000 * per_1k
            with_masking = prepare_all(masked, labeler, docs) * 1000 * per_1k
            print(f"{name:<10} {baseline:>18,.0f} {with_masking:>19,.0f} {with_masking / baseline:>6.1f}×")


if __name__ == "__main__":
    main()
