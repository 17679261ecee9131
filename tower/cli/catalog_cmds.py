"""`tower validate`: is the catalog valid? Every problem at once, one per line, with file:line:col."""

from __future__ import annotations

from tower.cli.common import catalog_path, plural, print_json
from tower.errors import CatalogError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check the catalog and report every problem",
        description="Check the catalog: YAML, fields, platforms, dependencies, cycles, schedules, selectors. "
        "Exit 0 when valid, 2 with one problem per line on stderr.",
    )
    parser.add_argument("--azure", action="store_true",
                        help="check it as the Functions app in Azure loads it (no command platforms)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.set_defaults(handler=validate)


def validate(args) -> int:
    from tower.catalog import load_catalog

    path = catalog_path(args)
    try:
        catalog = load_catalog(path, for_azure=args.azure)
    except CatalogError as exc:
        if args.json:
            print_json({"ok": False, "catalog": str(path), "problems": [_problem_json(p) for p in exc.problems]})
        raise  # main prints the problems on stderr and exits 2
    counts = {
        "services": len(catalog.services),
        "pipelines": len(catalog.pipelines),
        "platforms": len(catalog.platforms),
    }
    if args.json:
        print_json({"ok": True, "catalog": str(path), **counts})
    else:
        print("ok: " + ", ".join(plural(count, noun[:-1]) for noun, count in counts.items()))
    return 0


def _problem_json(problem) -> dict:
    return {
        "path": problem.path,
        "line": problem.line,
        "column": problem.column,
        "where": problem.where,
        "what": problem.what,
        "hint": problem.hint,
    }
