"""Library warnings and log records stay off the terminal (they go to $TOWER_HOME/tower.log);
Tower's own warnings reach it as one `warning:` line each."""

import logging
import warnings

from tower.cli.console import command_logging


def test_library_warnings_go_to_the_log_file_and_tower_warnings_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    with command_logging(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("Potential duplicate Task completion for TaskId: 3", UserWarning,
                               "TaskOrchestrationExecutor.py", 212,
                               module="azure.durable_functions.models.TaskOrchestrationExecutor")
        logging.getLogger("snowflake.connector.network").warning("retrying the login request")
        logging.getLogger("tower.platforms.snowflake").warning("Snowflake query history not readable")
        logging.getLogger("tower.platforms.snowflake").info("query 01b2 submitted")
    err = capsys.readouterr().err
    assert err == "warning: Snowflake query history not readable\n"
    log = (tmp_path / "home" / "tower.log").read_text()
    assert "Potential duplicate Task completion" in log and "retrying the login request" in log
    assert "query history" not in log
    assert not [h for h in logging.getLogger().handlers if type(h).__module__ == "tower.cli.console"]


def test_a_command_that_logs_nothing_creates_no_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    with command_logging():
        pass
    assert not (tmp_path / "home").exists()
