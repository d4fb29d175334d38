"""Stage 1, the taxonomy: proposed by an LLM (TnT-LLM) or by clustering, refined by people, versioned.

- ``tnt.taxonomy.store``: ``Taxonomy``, ``TaxonomyStore`` (``ws.taxonomies``);
- ``tnt.taxonomy.file``: export, import (problems reported by line) and diff;
- ``tnt.taxonomy.guardrails``: the bounds on a label table, in checks and in response schemas;
- ``tnt.taxonomy.summarize``: the sample and its use-case summaries;
- ``tnt.taxonomy.proposer``: generate → update → review, with ratings;
- ``tnt.taxonomy.refine``: grouping under parents, and refining from feedback and review corrections;
- ``tnt.taxonomy.cluster``: embed, cluster, name each cluster (by the LLM, or by
  ``tnt.taxonomy.keywords``: class-based TF-IDF, no LLM);
- ``tnt.taxonomy.pipeline``: the runs behind ``tnt taxonomy generate|refine`` and their estimates;
- ``tnt.taxonomy.evaluate``: an LLM judge of a version's coverage, accuracy and relevance.
"""
