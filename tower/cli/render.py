"""What a person sees of a run: a progress line while it runs, then a table and a text Gantt.

Everything here returns plain text from plain dicts (a run result, a compact custom status), so it
is easy to test; only `Progress` writes, and it loads `rich` only when stderr is a terminal.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from tower.catalog.durations import format_duration
from tower.states import RunState, ServiceState
from tower.timestamps import parse_iso

BAR_WIDTH = 48
BAR_CHAR = {ServiceState.SUCCEEDED: "█", ServiceState.FAILED: "▓", ServiceState.CANCELLED: "░",
            ServiceState.RUNNING: "▒"}
NOT_STARTED = (ServiceState.PENDING, ServiceState.UPSTREAM_FAILED, ServiceState.SKIPPED)
NOTE_WIDTH = 70  # characters of an error shown in a table (the summary below it has the whole line)
MIN_GANTT_SPAN = 1.0  # seconds: a run shorter than this is drawn on a one-second axis


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from `start` to `end` (ISO text, epoch seconds or datetimes); None if one is missing."""
    a, b = parse_iso(start), parse_iso(end)
    return None if a is None or b is None else (b - a).total_seconds()


def short_duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


# --- while it runs ------------------------------------------------------------------------------

def progress_text(custom_status: dict | None, now: datetime) -> str:
    """One line: done/total, running, failed, elapsed, ETA — from the compact custom status."""
    counts = (custom_status or {}).get("counts")
    if not counts:  # before the ledger has the run, or the run's own final status: no counts to show
        status = (custom_status or {}).get("status")
        return status if status and status != RunState.RUNNING else "starting…"
    total = sum(counts.values())
    finished = sum(n for state, n in counts.items() if state not in (ServiceState.PENDING, ServiceState.RUNNING))
    failed, held_back = counts.get(ServiceState.FAILED, 0), counts.get(ServiceState.UPSTREAM_FAILED, 0)
    parts = [f"{finished}/{total} done", f"{counts.get(ServiceState.RUNNING, 0)} running"]
    if failed + held_back:
        parts.append(f"{failed} failed, {held_back} held back")
    if counts.get(ServiceState.CANCELLED):
        parts.append(f"{counts[ServiceState.CANCELLED]} cancelled")
    elapsed = seconds_between(custom_status.get("started"), now)
    if elapsed is not None:
        parts.append(f"elapsed {short_duration(max(elapsed, 0.0))}")
    eta = seconds_between(now, custom_status.get("eta"))
    if eta is not None:
        parts.append(f"ETA {short_duration(max(eta, 0.0))}")
    return " · ".join(parts)


class Progress:
    """Shows progress on stderr: a live line on a terminal (rich), else a plain line whenever the
    counts change, at most once a second (logs stay short)."""

    def __init__(self, label: str, stream: TextIO | None = None, live: bool | None = None):
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._rich = None
        self._last_counts: Any = None
        self._last_print = 0.0

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._rich = Live("", console=Console(file=self.stream), refresh_per_second=8, transient=True)
            self._rich.__enter__()
        return self

    def update(self, custom_status: dict | None) -> None:
        now = datetime.now(timezone.utc)
        line = f"{self.label}: {progress_text(custom_status, now)}"
        if self._rich is not None:
            from rich.spinner import Spinner

            self._rich.update(Spinner("dots", text=line))
            return
        counts = (custom_status or {}).get("counts")
        if not counts:  # nothing to count yet, or the run just ended: its summary follows
            return
        if counts != self._last_counts and time.monotonic() - self._last_print >= 1.0:
            self._last_counts, self._last_print = counts, time.monotonic()
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None


# --- at the end -------------------------------------------------------------------------------

def table(rows: list[list[str]], indent: str = "", rule: bool = False) -> list[str]:
    """Rows as lines of left-aligned columns; with `rule`, the first row is a header, underlined."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(*rows, strict=True)]
    lines = [indent + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    if rule:
        lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return lines


def services_table(result: dict) -> str:
    """One row per service: status, attempts, start offset, duration, remote id or error."""
    run_start = result.get("started")
    rows = []
    for name, svc in result.get("services", {}).items():
        offset = seconds_between(run_start, svc.get("started")) if svc.get("started") else None
        duration = seconds_between(svc.get("started"), svc.get("finished"))
        note = svc.get("error") or svc.get("remote_id") or ""
        rows.append([name, svc.get("status", ""), str(svc.get("attempts") or 0),
                     "-" if offset is None else f"+{short_duration(max(offset, 0.0))}",
                     short_duration(duration) if svc.get("status") not in NOT_STARTED else "-",
                     clip(note.splitlines()[0], NOTE_WIDTH) if note.strip() else ""])
    return "\n".join(table([["service", "status", "tries", "start", "took", "remote id / error"], *rows], rule=True))


def gantt(result: dict, width: int = BAR_WIDTH, now: datetime | None = None) -> str:
    """A text Gantt: one row per service, bars placed and scaled on the run's own time line."""
    services = result.get("services", {})
    run_start = parse_iso(result.get("started"))
    run_end = parse_iso(result.get("finished")) or now or datetime.now(timezone.utc)
    if run_start is None or not services:
        return ""
    span = max((run_end - run_start).total_seconds(), MIN_GANTT_SPAN)  # so 0.01 s is not a long bar
    name_width = min(max(len(name) for name in services), 32)
    lines = []
    for name, svc in services.items():
        cells = [" "] * width
        start = parse_iso(svc.get("started"))
        if start is not None and svc.get("status") not in NOT_STARTED:
            end = parse_iso(svc.get("finished")) or run_end
            first = int((start - run_start).total_seconds() / span * width)
            last = int((end - run_start).total_seconds() / span * width)
            first = min(max(first, 0), width - 1)
            last = min(max(last, first + 1), width)
            char = BAR_CHAR.get(svc.get("status"), "█")
            cells[first:last] = [char] * (last - first)
        label = name if len(name) <= name_width else name[: name_width - 1] + "…"
        lines.append(f"{label.ljust(name_width)} │{''.join(cells)}│ {svc.get('status', '')}")
    axis = f"{'':{name_width}} 0{short_duration(span).rjust(width + 1)}"
    legend = f"{'':{name_width}}  █ succeeded  ▓ failed  ░ cancelled  ▒ running"
    return "\n".join([*lines, axis, legend])


def run_summary(result: dict, detail: str | None = None) -> str:
    """The report of a run: headline, table, Gantt, and what went wrong. `detail` follows the status
    in the headline; by default, how long the run took."""
    if detail is None:
        detail = f" in {short_duration(seconds_between(result.get('started'), result.get('finished')))}"
    headline = f"run {result.get('run_id')} of {result.get('pipeline')}: {result.get('status')}{detail}"
    parts = [headline, "", services_table(result), "", gantt(result)]
    if result.get("summary") and result.get("status") != RunState.SUCCEEDED:
        parts += ["", result["summary"]]
    return "\n".join(parts) + "\n"  # a blank line after it: `tower run a; tower run b` stay apart


def runs_table(runs: list[dict]) -> str:
    """`tower runs`: id, pipeline, trigger, status, started, duration, repair links: newest first, as given."""
    rows = []
    for run in runs:
        took = seconds_between(run.get("started"), run.get("finished"))
        links = [f"repaired by {run['repaired_by']}"] if run.get("repaired_by") else []
        links += [f"repair of {run['repair_of']}"] if run.get("repair_of") else []
        rows.append([run["run_id"], run.get("pipeline") or "", run.get("trigger") or "", run.get("status") or "",
                     _to_second(run.get("started")), short_duration(took),
                     "; ".join(links)])
    return "\n".join(table([["run id", "pipeline", "trigger", "status", "started", "duration", "repair"], *rows],
                           rule=True))


def _to_second(text: str | None) -> str:
    """ISO time to the second, for tables: 2026-12-06T04:39:15Z."""
    from tower.timestamps import parse_iso

    when = parse_iso(text) if text else None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""
