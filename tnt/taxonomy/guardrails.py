"""TnT-LLM's guardrails on a label table: how many labels, how many words per name and description,
no repeated names; and the response schemas that state the same bounds to a grammar-constrained model."""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tnt.taxonomy.store import OTHER_LABEL, TaxonomyLabel

A = TypeVar("A", bound=BaseModel)


class TaxonomyLimits(BaseModel):
    """Bounds on a label table (TnT-LLM's guardrails); the prompts state them to the model."""

    model_config = ConfigDict(frozen=True)

    min_labels: int = Field(2, ge=1)
    max_labels: int = Field(10, ge=1)
    max_name_words: int = Field(5, ge=1)
    max_description_words: int = Field(30, ge=1)


def guardrail_problems(labels: list[TaxonomyLabel], limits: TaxonomyLimits) -> list[str]:
    """Everything wrong with a flat table, as sentences; an empty list means it passes."""
    problems = []
    if not limits.min_labels <= len(labels) <= limits.max_labels:
        problems.append(
            f"{len(labels)} labels, but there must be {limits.min_labels} to {limits.max_labels}"
        )
    uses = Counter(label.name.strip().casefold() for label in labels)
    seen: set[str] = set()
    for label in labels:
        name = label.name.strip()
        key = name.casefold()
        if not name:
            problems.append("a label has an empty name")
        elif key == OTHER_LABEL.casefold():
            problems.append(f"{OTHER_LABEL!r} is reserved: it is added to every taxonomy automatically")
        elif key not in seen:  # a repeated name is reported once, with its count
            if uses[key] > 1:
                problems.append(f"label name {name!r} appears {uses[key]} times")
            if len(name.split()) > limits.max_name_words:
                problems.append(f"label name {name!r} has more than {limits.max_name_words} words")
        seen.add(key)
        if not label.description.strip():
            problems.append(f"label {name!r} has an empty description")
        elif len(label.description.split()) > limits.max_description_words:
            problems.append(f"description of {name!r} has more than {limits.max_description_words} words")
    return problems


@cache
def limited(answer: type[A], limits: TaxonomyLimits, max_groups: int | None = None) -> type[A]:
    """``answer`` whose JSON schema states the limits (maxItems, maxLength), so grammar-constrained
    backends cannot break them; validation stays lenient so ``guardrail_problems`` reports them."""

    def model_json_schema(cls: type[A], *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = answer.model_json_schema.__func__(cls, *args, **kwargs)  # type: ignore[attr-defined]
        _apply_limits(schema, limits, max_groups)
        return schema

    # Same name as ``answer``: it names the schema sent to the provider and appears in errors.
    return type(answer.__name__, (answer,), {"model_json_schema": classmethod(model_json_schema)})


def words_pattern(max_words: int) -> str:
    """A regex for 1 to ``max_words`` words separated by single spaces."""
    return f"^{WORD_PATTERN}( {WORD_PATTERN}){{0,{max_words - 1}}}$"


def words_chars(max_words: int) -> int:
    return (WORD_MAX_CHARS + 1) * max_words


def name_chars(limits: TaxonomyLimits) -> int:
    return words_chars(limits.max_name_words)


def description_chars(limits: TaxonomyLimits) -> int:
    return words_chars(limits.max_description_words)


def table_max_tokens(limits: TaxonomyLimits, rows: int | None = None) -> int:
    """Room for a full table of worst-case rows at two characters a token (a small model's digits and
    repeats come near one; ordinary text is four)."""
    return 400 + (rows or limits.max_labels) * ((name_chars(limits) + description_chars(limits)) // 2 + 20)


def typical_table_tokens(limits: TaxonomyLimits, rows: int | None = None) -> int:
    """What a full table usually costs (about 1.5 tokens a word), for estimates."""
    return int(100 + (rows or limits.max_labels) * (limits.max_name_words + limits.max_description_words) * 1.5)


def _apply_limits(schema: dict[str, Any], limits: TaxonomyLimits, max_groups: int | None) -> None:
    properties = schema["properties"]
    if "labels" in properties:
        properties["labels"] |= {"minItems": limits.min_labels, "maxItems": limits.max_labels}
    if "groups" in properties and max_groups:
        properties["groups"] |= {"minItems": 2, "maxItems": max_groups}
    for definition in [schema, *schema.get("$defs", {}).values()]:
        fields = definition.get("properties", {})
        if "name" in fields:
            fields["name"] |= _text_bounds(name_chars(limits), limits.max_name_words)
        if "description" in fields:
            fields["description"] |= _text_bounds(description_chars(limits), limits.max_description_words)


def _text_bounds(max_chars: int, max_words: int) -> dict[str, Any]:
    return {"minLength": 1, "maxLength": max_chars, "pattern": words_pattern(max_words)}


# The schema bounds names and descriptions by words: a ``pattern`` of at most N words, each of 1 to
# WORD_MAX_CHARS characters that JSON writes unescaped (no space, quote, backslash or control
# character). llama.cpp's grammar then cannot break the word guardrails; for it the pattern replaces
# ``maxLength``, which is set to the same worst case for providers that read only that.
WORD_MAX_CHARS = 16  # "cryptocurrency" and "authentication" fit; runs of digits and dots do not


WORD_PATTERN = rf'[^ "\\\x00-\x1F\x7F]{{1,{WORD_MAX_CHARS}}}'
