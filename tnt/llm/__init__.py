"""The one LLM call path every stage uses.

- ``tnt.llm.gateway``: ``Gateway.complete`` (cache, retries, rate limits, validation with one repair
  round, the call log) and ``LLMSettings``;
- ``tnt.llm.local``: the offline GGUF model through llama-cpp-python;
- ``tnt.llm.prompts``: every prompt as a user-overridable template pair, document text fenced as data;
- ``tnt.llm.stage``: ``run_llm_stage``, the per-document driver of labeling and quality scoring.
"""
