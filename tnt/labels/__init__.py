"""Stage 2, labels: every label of every document under a taxonomy version, from the LLM, people or a
distilled model, and quality scores.

- ``tnt.labels.store``: ``LabelRecord``, ``LabelStore`` (``ws.labels``), append-only with provenance;
- ``tnt.labels.labeling``: ``label_documents``, the LLM pre-annotation run;
- ``tnt.labels.quality``: ``score_quality``, Ask-LLM and other scored prompts;
- ``tnt.labels.imported``: labels that arrive with the corpus (``--label-field``).
"""
