"""Stage 2b, human review: which documents people should look at, how far labels agree, and Label Studio.

- ``tnt.review.sampling``: ``sample_for_review`` (disagreements, least confident, stratified);
- ``tnt.review.agreement``: LLM against people, people against each other, and a version's labels
  against a reference version's human labels (AMI and the label mapping);
- ``tnt.review.labelstudio``: label configs, predictions and the webhook's annotations
  (``label_studio_backend`` serves them to Label Studio);
- ``tnt.review.labelstudio_sync``: push, connect and pull through Label Studio's SDK, people's labels
  carried to a new taxonomy version's project as annotations.
"""
