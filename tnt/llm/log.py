"""The call log: every LLM call the gateway makes, in full, in the workspace's ``llm_calls`` table.

A record holds the messages sent, the parameters (the answer's JSON schema included), the response
text, the prompt template's name and hash, the run and stage, usage, cost, latency and the outcome
(``ok``, ``cached``, ``error``, ``invalid``). API keys are never part of a request, and errors are
redacted before they get here. ``tnt logs`` reads it; ``tnt cost`` sums it (``call_summary``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from tnt.runs import WorkspaceError

if TYPE_CHECKING:
    from tnt.workspace import Workspace

JSON_COLUMNS = ("messages", "params")


@dataclass
class CallRecord:
    """One LLM call as logged; ``messages``, ``params`` and ``response`` are None on rows logged
    before the log kept full calls."""

    run_id: str | None
    key: str
    model: str
    stage: str
    outcome: str  # ok | cached | error | invalid
    created_at: str
    messages: list[dict[str, str]] | None = None
    params: dict[str, Any] | None = None
    response: str | None = None
    prompt_name: str | None = None
    prompt_hash: str | None = None
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_ms: float = 0.0
    id: int | None = None  # set by the database

    def to_dict(self) -> dict[str, Any]:
        # shallow, unlike dataclasses.asdict, whose deep copy of messages and schema costs ~0.1 ms a call
        return {"id": self.id} | {f.name: getattr(self, f.name) for f in fields(self) if f.name != "id"}

    def row(self) -> dict[str, Any]:
        """The record as table columns (JSON as text)."""
        row = {name: value for name, value in self.to_dict().items() if name != "id"}
        for name in JSON_COLUMNS:
            if row[name] is not None:
                row[name] = json.dumps(row[name], ensure_ascii=False)  # readable, and searchable with -q
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRecord:
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in row.items() if name in known}
        for name in JSON_COLUMNS:
            if values.get(name) is not None:
                values[name] = json.loads(values[name])
        return cls(**values)

    @property
    def prompt_preview(self) -> str:
        """The first line of the last user message that says something (not a fence tag)."""
        users = [m["content"] for m in self.messages or [] if m.get("role") == "user"]
        return _first_line(users[-1]) if users else ""

    @property
    def response_preview(self) -> str:
        """The first line of the answer, or the error for a call without one."""
        return _first_line(self.response or self.error or "")


class CallLog:
    """Reads and writes a workspace's call log."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def add(self, record: CallRecord) -> None:
        row = record.row()
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.db.conn:
            self.db.execute(f"insert into llm_calls ({columns}) values ({marks})", list(row.values()))

    def recent(
        self,
        count: int = 10,
        *,
        run: str | None = None,
        stage: str | None = None,
        query: str | None = None,
    ) -> list[CallRecord]:
        """The latest ``count`` calls (0: all), newest first; ``run`` is a run id or unique prefix,
        ``query`` a text (any case) that a user message or the response contains."""
        where, args = [], []
        if run is not None:
            where.append("run_id = ?")
            args.append(self.workspace.runs.get(run)["id"])
        if stage is not None:
            where.append("stage = ?")
            args.append(stage)
        if query:  # the user's messages, not the system prompt that every call of a stage shares
            pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(response like ? escape '\\' or exists (select 1 from json_each(messages)"
                " where json_extract(value, '$.role') = 'user'"
                " and json_extract(value, '$.content') like ? escape '\\'))"
            )
            args += [pattern, pattern]
        sql = "select * from llm_calls" + (" where " + " and ".join(where) if where else "")
        sql += " order by id desc" + (" limit ?" if count else "")
        rows = self.db.query(sql, args + ([count] if count else []))
        return [CallRecord.from_row(row) for row in rows]

    def get(self, call_id: int) -> CallRecord:
        rows = list(self.db.query("select * from llm_calls where id = ?", [call_id]))
        if not rows:
            raise WorkspaceError(f"no LLM call with id {call_id} in {self.workspace.path} (`tnt logs` lists them)")
        return CallRecord.from_row(rows[0])


def call_summary(workspace: Workspace, run_id: str | None = None) -> list[dict[str, Any]]:
    """Calls, tokens sent and dollars per run and model; cost is None where any price was unknown."""
    sql = """
        select run_id, model,
            count(*) as calls,
            sum(outcome = 'ok') as sent,
            sum(outcome = 'cached') as cached,
            sum(outcome in ('error', 'invalid')) as failed,
            sum(attempts) as http_attempts,
            sum(case when outcome = 'ok' then prompt_tokens end) as prompt_tokens,
            sum(case when outcome = 'ok' then completion_tokens end) as completion_tokens,
            case when sum(outcome = 'ok' and cost is null) > 0 then null else sum(cost) end as cost
        from llm_calls
        where ? is null or run_id = ?
        group by run_id, model
        order by min(id)
    """
    return list(workspace.db.query(sql, [run_id, run_id]))


def _first_line(text: str) -> str:
    """``<document>`` fences and blank lines are skipped: the preview shows the text itself."""
    for line in text.splitlines():
        line = line.strip()
        if line and not (line.startswith("<") and line.endswith(">")):
            return line
    return ""
