"""Ingest speed and memory, as ratios against baselines measured in the same run.

    python bench/ingest.py speed            # BANKING77 train.csv: ingest vs parsing the CSV alone
    python bench/ingest.py memory --mb 1000 # peak RSS importing an N MB JSONL vs a 1 MB one

The generated JSONL lives in a temporary directory and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BANKING77 = Path(__file__).resolve().parents[1] / "data" / "banking77" / "train.csv"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds): on a shared machine CPU time is the steadier of the two."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed(runs: int) -> None:
    from tnt.workspace import Workspace

    def parse() -> None:
        with open(BANKING77, newline="") as f:
            for _ in csv.reader(f):
                pass

    def ingest_twice(label_field: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
        with tempfile.TemporaryDirectory() as tmp, Workspace.create(tmp) as ws:
            first = timed(lambda: ws.ingest([BANKING77], label_field=label_field))
            again = timed(lambda: ws.ingest([BANKING77], label_field=label_field))
        return first, again

    with open(BANKING77, newline="") as f:
        rows = sum(1 for _ in csv.reader(f)) - 1
    base = min(timed(parse) for _ in range(runs))

    def show(name: str, took: tuple[float, float]) -> None:
        print(f"{name:32s} wall {took[0] * 1000:7.1f} ms  cpu {took[1] * 1000:7.1f} ms  "
              f"{rows / took[1]:9,.0f} rows/s of cpu  {took[1] / base[1]:6.1f}x")  # fmt: skip

    show("csv.reader alone (baseline)", base)
    for name, label_field in (("ingest", None), ("ingest --label-field category", "category")):
        results = [ingest_twice(label_field) for _ in range(runs)]
        show(name, min(first for first, _ in results))
        show("  again (all already present)", min(again for _, again in results))


def write_jsonl(path: Path, megabytes: float) -> int:
    """Documents of 40-120 random words (~500 characters) until the file reaches the size."""
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    written = docs = 0
    with open(path, "w") as out:
        while written < megabytes * 1_000_000:
            line = json.dumps(
                {"text": " ".join(rng.choices(words, k=rng.randint(40, 120))), "source": f"crawl-{docs % 7}"}
            )
            written += out.write(line + "\n")
            docs += 1
    return docs


CHILD = """
import resource, sys, time
from tnt.corpus.ingest import ingest
from tnt.workspace import Workspace
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
with Workspace.create(sys.argv[1]) as ws:
    start, start_cpu = time.perf_counter(), cpu()
    summary = ws.ingest([sys.argv[2]])
    wall, used = time.perf_counter() - start, cpu() - start_cpu
    print(summary.total("added"), wall, used, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def ingest_in_child(tmp: Path, name: str, megabytes: float) -> tuple[int, float, float, int]:
    path = tmp / f"{name}.jsonl"
    write_jsonl(path, megabytes)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp / f"ws-{name}"), str(path)], check=True,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    path.unlink()
    return int(out[0]), float(out[1]), float(out[2]), int(out[3])


def memory(megabytes: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("1 MB (baseline)", *ingest_in_child(Path(tmp), "small", 1))]
        rows.append((f"{megabytes:,.0f} MB", *ingest_in_child(Path(tmp), "large", megabytes)))
    base_rss = rows[0][4]
    for name, docs, wall, cpu, rss in rows:
        print(f"{name:16s} {docs:>10,} docs  wall {wall:7.1f} s  cpu {cpu:7.1f} s ({docs / cpu:,.0f} docs/s)  "
              f"peak RSS {rss / 1024:6.1f} MB  {rss / base_rss:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "memory"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=1000)
    args = parser.parse_args()
    speed(args.runs) if args.what == "speed" else memory(args.mb)


if __name__ == "__main__":
    main()
