"""Stage 3, distillation: small classifiers trained on LLM and human labels tag the whole corpus.

- ``tnt.distill.encoders``: sentence encoders (ONNX int8/fp32, or torch) and the hashing encoder;
- ``tnt.distill.heads``: linear and MLP heads, calibrated, saved as arrays;
- ``tnt.distill.model``: ``DistilledClassifier`` / ``DistilledRegressor`` (and the ``CascadeClassifier``,
  ``FinetunedClassifier`` kinds), saved as data (no pickles);
- ``tnt.distill.finetune``: fine-tuning the sentence encoder on labels (``embed-finetune``);
- ``tnt.distill.train``: ``train``, a model from a workspace's labels, evaluated;
- ``tnt.distill.store``: ``ModelStore`` (``ws.models``);
- ``tnt.distill.tag``: ``tag_corpus`` and ``tag_files`` (Parquet shards; Ray Data for a cluster).
"""
