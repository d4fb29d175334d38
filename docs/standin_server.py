"""The provider stand-in behind the README's walkthrough output.

``tests/llm_server.py`` (the scripted OpenAI-compatible server the tests use) with a responder that
reads each request the way a model would and answers from keyword rules about online-banking
queries: a taxonomy table for generate/update/review, ratings, and one label per document.

    .venv/bin/python -m docs.standin_server --port 8765      # then --model openai/standin
                                                             # --api-base http://127.0.0.1:8765/v1

It is not a model: the labels it gives are keyword matches. It exists so the README shows real
output of real commands without a paid provider.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter

from tests.llm_server import Reply, ScriptedLLMServer

# (name, description, keywords): the first label whose keyword occurs in the text wins.
LABELS = [
    ("Top-ups", "Adding money to the account: top-ups that failed, are pending or were reverted.",
     ("top up", "top-up", "topup", "topped up", "top-up")),
    ("Fees", "Fees and charges the customer did not expect.", ("fee", "charge")),
    ("Cash withdrawals", "ATM and cash withdrawals: declined, wrong amount, pending.",
     ("atm", "cash", "withdraw")),
    ("Exchange rates", "Currencies and the exchange rate applied.", ("exchange", "currenc", "rate")),
    ("Transfers", "Sending or receiving money by bank transfer.", ("transfer", "beneficiary", "send money")),
    ("Card delivery", "Ordering a card, its delivery and activation.",
     ("arrive", "deliver", "new card", "activate", "track", "order")),
    ("Card payments", "Card payments that were declined, pending or look wrong.",
     ("payment", "declined", "pending", "refund", "contactless", "apple pay", "google pay")),
    ("Account and security", "Identity checks, PIN, lost or stolen cards, account details.",
     ("verif", "identity", "pin", "passcode", "stolen", "lost", "account", "compromised", "password")),
]
OTHER = [("General questions", "Messages about none of the topics above.", ())]
FIRST_TABLE = 6  # the first minibatch proposes six labels; updates add the rest
WIDER = {  # what a refinement adds to a label people moved documents to
    "Card payments": "Also refunds and cards that stop working.",
    "Transfers": "Also money received and how long transfers take.",
    "Account and security": "Also personal details and closing the account.",
    "Card delivery": "Also spare, virtual and expiring cards.",
    "Fees": "Also unexpected charges on the statement.",
}


def table(n: int) -> list[dict]:
    return [{"id": i, "name": name, "description": desc} for i, (name, desc, _) in enumerate(LABELS[:n], 1)]


def table_in(body: dict) -> list[str]:
    before = body["messages"][-1]["content"].split("<document>")[0]
    return re.findall(r"^\d+\. (.+?): ", before, re.MULTILINE)


def label_of(text: str) -> tuple[str, float]:
    lowered = text.lower()
    for name, _, keywords in LABELS:
        hits = sum(keyword in lowered for keyword in keywords)
        if hits:
            return name, min(0.97, 0.72 + 0.12 * hits)
    return "Other", 0.55


def answer(text: str) -> dict:
    label, confidence = label_of(text)
    return {"label": label, "explanation": f"The message is about {label.lower()}.", "confidence": round(confidence, 2)}


def documents(body: dict) -> list[str]:
    """The fenced documents of the request (a repair round repeats them earlier in the messages)."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user" and "<document>" in m["content"])
    return [d.strip() for d in re.findall(r"<document>\n?(.*?)\n?</document>", content, re.DOTALL)]


def responder(body: dict) -> str | Reply:
    schema = body.get("response_format", {}).get("json_schema", {}).get("name", "")
    if not schema and body.get("logprobs"):  # Ask-LLM: P(yes) grows with how specific the message is
        words = len(documents(body)[0].split())
        p_yes = min(0.9, 0.2 + 0.04 * words)
        alternatives = [{"token": "yes", "logprob": math.log(p_yes)}, {"token": "no", "logprob": math.log(1 - p_yes)}]
        return Reply("yes" if p_yes >= 0.5 else "no", top_logprobs=alternatives)
    if schema == "VerbalisedScore":
        return json.dumps({"score": 0.5})
    system = body["messages"][0]["content"]
    if schema == "TableAnswer" and "review" in system.lower():
        shown = table_in(body)
        return json.dumps({"labels": [row for row in table(len(LABELS)) if row["name"] in shown]})
    if schema == "TableAnswer":
        return json.dumps({"labels": table(FIRST_TABLE)})
    if schema == "UpdateAnswer":
        size = min(len(LABELS), len(table_in(body)) + 1)
        return json.dumps({"rating": 55 + 5 * size, "explanation": "Most messages fit; one topic is missing.",
                           "suggested_edits": [f"add {LABELS[size - 1][0]}"], "labels": table(size)})
    if schema == "RatingAnswer":
        return json.dumps({"explanation": "Covers most messages.", "rating": 40 + 5 * len(table_in(body))})
    if schema == "RefineAnswer":  # widen the labels people moved documents to
        moved = re.findall(r"^- .+? → (.+?) \((\d+)×\)", body["messages"][-1]["content"], re.MULTILINE)
        wider = {name: WIDER[name] for name, _ in moved if name in WIDER}
        rows = [{**row, "description": f"{row['description']} {wider[row['name']]}" if row["name"] in wider else row["description"]}
                for row in table(len(LABELS)) if row["name"] in table_in(body)]
        changes = [f"{name}: widened ({count} messages moved to it from another label)" for name, count in moved if name in wider]
        return json.dumps({"changes": changes, "labels": rows})
    if schema == "SummaryAnswer":
        text = documents(body)[0]
        return json.dumps({"summary": text[:120], "explanation": "The request itself."})
    if schema == "DocumentLabels":  # a batch: "Document N:" before each fenced document
        return json.dumps({"results": [{"id": i, **answer(t)} for i, t in enumerate(documents(body), 1)]})
    if schema == "DocumentLabel":
        return json.dumps(answer(documents(body)[0]))
    if schema == "ClusterName":  # the keyword label most members share
        members = documents(body)[0].splitlines()
        names = Counter(label_of(re.sub(r"^\d+\. ", "", m))[0] for m in members)
        name = next((n for n, _ in names.most_common() if n != "Other"), "General questions")
        return json.dumps({"name": name, "description": next(d for n, d, _ in LABELS + OTHER if n == name)})
    if schema == "AssignAnswer":  # evaluation: assign a label (the schema's enum) to one document
        allowed = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        label = label_of(documents(body)[0])[0]
        return json.dumps({"label": label if label in allowed else allowed[-1]})
    if schema == "PairwiseAnswer":  # evaluation: the label the keyword rules would give, else A
        b = re.search(r"^B: (.+?): ", system, re.MULTILINE)
        return json.dumps({"choice": "B" if b and b.group(1) == label_of(documents(body)[0])[0] else "A"})
    if schema == "RelevanceAnswer":
        return json.dumps({"relevant": True})
    raise ValueError(f"the stand-in does not know the step {schema!r}")


class StandinServer(ScriptedLLMServer):
    """The scripted server on a chosen port (0: any free one)."""

    def __init__(self, port: int = 0, latency_s: float = 0.02):
        super().__init__(responder, latency_s=latency_s, record_requests=False, port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.02, help="Seconds per answer.")
    args = parser.parse_args()
    with StandinServer(args.port, args.latency) as server:
        print(server.url, flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
