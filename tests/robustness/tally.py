"""What the robustness suite tried, counted where it happens, printed at the end of the run.

- faults: a process killed (SIGKILL) or a write failed on purpose; `survived`
  when every check after it held (resume/re-run completed, nothing lost).
- bad inputs: a file, folder, recipe or checkpoint that must be refused or
  skipped; `clean` when it gave a one-line message naming it, a non-zero exit
  (or a listed skip) and no traceback.
- tracebacks: any "Traceback" seen in a command's output without --debug.
"""

from __future__ import annotations

from collections import Counter

faults: Counter = Counter()  # (kind, "injected" | "survived") -> n
bad_inputs: Counter = Counter()  # (kind, "tried" | "clean") -> n
tracebacks = [0]


def fault(kind: str) -> "_Pending":
    """Count a fault as injected now; call .survived() once every check after it passed."""
    faults[(kind, "injected")] += 1
    return _Pending(faults, kind, "survived")


def bad_input(kind: str) -> "_Pending":
    bad_inputs[(kind, "tried")] += 1
    return _Pending(bad_inputs, kind, "clean")


class _Pending:
    def __init__(self, counter: Counter, kind: str, outcome: str):
        self.counter, self.kind, self.outcome = counter, kind, outcome

    def survived(self) -> None:
        self.counter[(self.kind, self.outcome)] += 1

    clean = survived


def summary() -> list[str]:
    lines = []
    for title, counter, good in (("faults injected", faults, "survived"), ("bad inputs tried", bad_inputs, "clean")):
        kinds = sorted({kind for kind, _ in counter})
        first = "injected" if good == "survived" else "tried"
        total, ok = sum(counter[(k, first)] for k in kinds), sum(counter[(k, good)] for k in kinds)
        lines.append(f"{title}: {total}, {good}: {ok}")
        lines += [f"  {k}: {counter[(k, first)]} {first}, {counter[(k, good)]} {good}" for k in kinds]
    lines.append(f"tracebacks seen: {tracebacks[0]}")
    return lines
