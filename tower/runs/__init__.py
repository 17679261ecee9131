"""A run's state, from its frozen plan to its recorded history. Registers no functions.

    plan          the frozen run plan: the selected services and their settings, and the ids
    scheduler     the pure dispatch rules (ready when dependencies end, slots, longest path first)
    ledger        the dispatch API: a run's scheduler state kept outside any orchestration history
    ledger_sqlite, ledger_table   the ledger's two stores (local, Azure Table Storage)
    slots         platform slots shared by every run
    history       finished attempts, whose durations feed priorities and expected-end polling
    index         the runs index: a run started once, listed newest first
"""
