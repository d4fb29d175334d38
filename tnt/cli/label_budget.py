"""``tnt label --budget N``: the options of budgeted active labeling and what it prints."""

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tnt.cli.common import console, fail

if TYPE_CHECKING:
    from tnt.active import BudgetPlan, BudgetResult


class Strategy(str, Enum):
    uncertain = "uncertain"
    random = "random"


BudgetOption = Annotated[
    int | None,
    typer.Option(
        "--budget", min=1,
        help="Active labeling: the LLM labels N documents of the selection (default --all), chosen round by"
        " round where the tagger trained so far is least sure; the final tagger is trained and registered.",
    ),
]  # fmt: skip
StrategyOption = Annotated[
    Strategy,
    typer.Option("--strategy", help="With --budget: uncertain (seed, then rounds) or random (one round)."),
]
SeedShareOption = Annotated[
    float,
    typer.Option("--seed-share", min=0.0, max=1.0, help="With --budget: share of the budget in the seed round."),
]
RoundsOption = Annotated[
    int, typer.Option("--rounds", min=1, help="With --budget: rounds after the seed, the rest split evenly.")
]


def plan_or_fail(budget: int, pool: int, strategy: Strategy, seed_share: float, rounds: int) -> "BudgetPlan":
    from tnt.active import plan_budget

    try:
        return plan_budget(budget, pool, strategy.value, seed_share, rounds)
    except ValueError as exc:
        fail(str(exc))


def announce_round(number: int, plan: "BudgetPlan") -> None:
    what = "seed" if number == 0 and plan.strategy == "uncertain" else f"round {number}"
    console.print(f"{what}: {plan.sizes[number]:,} documents")


def print_plan(plan: "BudgetPlan") -> None:
    table = Table("budget plan", "", show_header=False)
    table.add_row("strategy", plan.strategy)
    table.add_row("documents to choose from", f"{plan.pool:,}")
    table.add_row("documents the LLM labels", f"{plan.budget:,}")
    if plan.strategy == "uncertain":
        table.add_row("seed (one per k-means cluster)", f"{plan.seed:,}")
        later = plan.sizes[1:]
        table.add_row("rounds chosen by the tagger", f"{len(later)} × {later[0]:,}" if later else "none")
    console.print(table)


def print_trained(result: "BudgetResult") -> None:
    report = result.report
    assert report is not None
    done = sum(r is None for r in result.rounds)
    console.print(
        f"Spent {result.plan.budget:,} LLM labels in {len(result.rounds)} round(s)"
        f"{f' ({done} labeled by an earlier run)' if done else ''}; {result.requests:,} requests sent."
    )
    accuracy = report.metrics.get("accuracy")
    shown = f", accuracy {accuracy:.3f} on {report.metrics['reference']}" if accuracy is not None else ""
    console.print(f"Model {report.model.id} registered{shown}.")
