"""The command platform: a service that is a local process.

Spec fields:
    run   a string (run by /bin/sh) or a list of strings (run as is, no shell)
    cwd   working directory (optional)
    env   extra environment variables (optional mapping)

Run params reach the process as environment variables, never through the command line:
``TOWER_PARAM_<NAME>`` (name upper-cased, anything but letters, digits and ``_`` becomes ``_``),
plus ``TOWER_RUN_ID``, ``TOWER_SERVICE`` and ``TOWER_ATTEMPT``.

The process outlives the activity that starts it: it runs in its own session under a small shell
wrapper that writes its exit code to a file when it ends. Everything lives in
``<home>/commands/<key>.*`` (the runtime's home: $TOWER_HOME locally) (``.json`` the handle, ``.log`` stdout, ``.err`` stderr, ``.exit``
the exit code, ``.cancelled`` a cancel marker), so any process can poll it, even after a crash (the
exit file first: after a restart, the pid may be another process's). A second submit with the same
idempotency key re-attaches to the process the first one started.
The process reads no input (its stdin is /dev/null, never the host's terminal) and holds none of
the host's descriptors (``close_fds``: a pipe the host's parent reads still ends with the host).
`tower logs RUN SERVICE` prints the two logs (the handle names them).

A non-zero exit is a retryable failure: whether to try again is the service's retry policy. Its
message carries the last lines of stderr (secrets masked), so "exit code 3" says why.
Settings: ``kill_grace`` seconds between SIGTERM and SIGKILL on cancel (default 5). A cancel waits
only on what is left of the process group that is not a zombie: another process's unreaped child
is over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tower.errors import NonRetryableError
from tower.platforms.base import (
    Handle,
    Status,
    Submission,
    param_text,
    tail,
)
from tower.processes import pid_alive
from tower.states import RemoteState

# Runs "$@", then publishes its exit code atomically (write + rename), so a reader never sees half.
_WRAPPER = '"$@"; code=$?; printf "%s" "$code" > "$TOWER_EXIT_FILE.tmp"; mv "$TOWER_EXIT_FILE.tmp" "$TOWER_EXIT_FILE"'
_TAIL_BYTES = 4096
ERROR_LINES = 3  # lines of stderr in a failure's message

def file_key(idempotency_key: str) -> str:
    """A file-name-safe, collision-free form of an idempotency key."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", idempotency_key)[:80]
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


def param_env_name(name: str) -> str:
    return "TOWER_PARAM_" + re.sub(r"[^A-Za-z0-9_]", "_", str(name)).upper()


def _argv(spec: dict, service: str) -> list[str]:
    run = spec.get("run")
    if isinstance(run, str) and run.strip():
        return ["/bin/sh", "-c", run]
    if isinstance(run, list) and run and all(isinstance(part, (str, int, float)) for part in run):
        return [str(part) for part in run]
    raise NonRetryableError(
        f"service {service!r}: command field 'run' must be a non-empty string or list of strings, "
        f"got {run!r}",
        platform="command",
    )


def _environment(submission: Submission, exit_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    extra = submission.spec.get("env") or {}
    if not isinstance(extra, dict):
        raise NonRetryableError(
            f"service {submission.service!r}: command field 'env' must be a mapping", platform="command"
        )
    env.update({str(k): str(v) for k, v in extra.items()})
    for name, value in submission.params.items():
        env[param_env_name(name)] = param_text(value)
    env.update(
        TOWER_RUN_ID=submission.run_id,
        TOWER_SERVICE=submission.service,
        TOWER_ATTEMPT=str(submission.attempt),
        TOWER_EXIT_FILE=str(exit_file),
    )
    return env


def _alive(pid: int, children: dict[int, subprocess.Popen]) -> bool:
    """Is the wrapper still running? Reaps the adapter's own `children`; a zombie counts as dead."""
    child = children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        children.pop(pid, None)
        return False
    if not pid_alive(pid):
        return False
    state = _proc_state(pid)
    return state is None or state[0] != "Z"


def _proc_state(pid: int | str) -> tuple[str, int] | None:
    """(state letter, process group) from /proc/<pid>/stat; None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _group_alive(pid: int, pgid: int, children: dict[int, subprocess.Popen]) -> bool:
    """Is anything of the process group left (the wrapper or what it started)? Zombies don't count:
    an orphan is reaped only if PID 1 reaps, which is not a given in a container."""
    if _alive(pid, children):
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            state = _proc_state(entry.name)
            if state is not None and state[1] == pgid and state[0] != "Z":
                return True
    return False


def _read_tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    return tail(data.decode("utf-8", errors="replace").strip())


def _output(data: dict) -> str:
    """What the service printed: the end of stdout, then the end of stderr."""
    stderr = data.get("stderr")
    parts = [_read_tail(Path(data["log"])), _read_tail(Path(stderr) if stderr else None)]
    return tail("\n".join(part for part in parts if part))


def _why(data: dict) -> str:
    """The last lines of stderr (else of stdout), secrets masked: what a failure message quotes."""
    from tower.redact import redact

    stderr = data.get("stderr")
    text = _read_tail(Path(stderr) if stderr else None) or _read_tail(Path(data["log"]))
    lines = [line.strip() for line in text.splitlines() if line.strip()][-ERROR_LINES:]
    return redact(" | ".join(lines))


def _with(message: str, why: str) -> str:
    return f"{message}: {why}" if why else message


def output_files(home: Path, run_id: str, service: str, attempt: int) -> list[tuple[str, Path]]:
    """Where one attempt's stdout and stderr went (the files exist once it was submitted)."""
    key = file_key(Submission(run_id, service, attempt, {}).idempotency_key)
    directory = Path(home) / "commands"
    return [("stdout", directory / f"{key}.log"), ("stderr", directory / f"{key}.err")]


class CommandAdapter:
    """Runs a service as a detached local process and follows it through files.

    The processes this adapter started are kept (`_children`) so their exit is reaped: no zombies
    while this process lives. One adapter per process serves every activity (the runtime's
    `Platforms` keeps it); a process that did not start a command (another host, a later adapter)
    follows it through its files and /proc, and treats a zombie as ended."""

    def __init__(self, settings: dict[str, Any] | None = None, *, home: str | Path | None = None):
        """`home`: where its files go (``<home>/commands``), given by the runtime that builds it
        (`tower.platforms.Platforms`); None: $TOWER_HOME (else ./.tower), read once, here."""
        from tower.paths import tower_home

        settings = settings or {}
        self.kill_grace = float(settings.get("kill_grace", 5.0))
        self.home = Path(home if home is not None else tower_home()).resolve()
        self._children: dict[int, subprocess.Popen] = {}

    def submit(self, submission: Submission) -> Handle:
        argv = _argv(submission.spec, submission.service)
        directory = self.home / "commands"
        directory.mkdir(parents=True, exist_ok=True)
        key = file_key(submission.idempotency_key)
        handle_file = directory / f"{key}.json"
        with open(directory / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one submit per key at a time, across processes
            if handle_file.exists():
                return Handle.from_json(json.loads(handle_file.read_text()))
            handle = self._start(submission, argv, directory, key)
            tmp = handle_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(handle.to_json()))
            tmp.replace(handle_file)
        return handle

    def _start(self, submission: Submission, argv: list[str], directory: Path, key: str) -> Handle:
        exit_file, log_file, err_file = (directory / f"{key}.{suffix}" for suffix in ("exit", "log", "err"))
        cwd = submission.spec.get("cwd")
        if cwd is not None and not Path(cwd).is_dir():
            raise NonRetryableError(
                f"service {submission.service!r}: command cwd {cwd!r} is not a directory",
                platform="command",
            )
        env = _environment(submission, exit_file)
        with open(log_file, "ab") as log, open(err_file, "ab") as err:
            child = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "tower-command", *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=err,
                cwd=cwd, env=env, start_new_session=True, close_fds=True,
            )
        self._children[child.pid] = child
        return Handle(
            remote_id=f"pid:{child.pid}",
            data={
                "pid": child.pid,
                "pgid": child.pid,  # start_new_session: the wrapper leads its own process group
                "log": str(log_file),
                "stderr": str(err_file),
                "exit": str(exit_file),
                "cancelled": str(directory / f"{key}.cancelled"),
            },
        )

    def poll(self, handle: Handle) -> Status:
        data = handle.data
        exit_file, cancelled = Path(data["exit"]), Path(data["cancelled"]).exists()
        code_text = exit_file.read_text().strip() if exit_file.exists() else None
        if code_text is None and _alive(data["pid"], self._children):
            return Status(RemoteState.RUNNING, output=_output(data))
        if code_text is None and exit_file.exists():  # it finished between the two looks
            code_text = exit_file.read_text().strip()
        _alive(data["pid"], self._children)  # reap our own child, so it leaves no zombie behind
        output = _output(data)
        if cancelled and code_text != "0":  # a clean exit that beat the signal is still a success
            return Status(RemoteState.CANCELLED, message="cancelled", output=output)
        why = _why(data)
        if code_text is None:
            return Status(RemoteState.FAILED, message=_with("the process ended without an exit code (killed?)", why),
                          retryable=True, output=output)
        code = int(code_text)
        if code == 0:
            return Status(RemoteState.SUCCEEDED, output=output)
        return Status(RemoteState.FAILED, message=_with(f"exit code {code}", why), retryable=True, output=output)

    def cancel(self, handle: Handle) -> None:
        data = handle.data
        if Path(data["exit"]).exists() or not _alive(data["pid"], self._children):
            return  # it ended first: the outcome stands, no cancel marker rewrites it
        Path(data["cancelled"]).touch()
        self._signal(data["pgid"], signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            if not _group_alive(data["pid"], data["pgid"], self._children):
                return
            time.sleep(0.02)
        self._signal(data["pgid"], signal.SIGKILL)

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
