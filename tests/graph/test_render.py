"""Renderers: exact, stable output, with awkward names made safe."""

from tower.graph import mermaid_ids, render_dot, render_mermaid, render_text

DEPS = {
    "extract": [],
    "clean": ["extract"],
    "end": ["clean"],
    'odd "name" <x>#': ["extract"],
    "report.v2": ["clean", 'odd "name" <x>#'],
}
NOTES = {"extract": "databricks, 15m", "clean": "snowflake, 5m"}


def test_text_lists_levels_with_notes_marks_and_dependencies():
    assert render_text(DEPS, NOTES, highlight={"extract", "clean", "end"}) == (
        "level 0\n"
        " * extract          (databricks, 15m)\n"
        "level 1\n"
        " * clean            (snowflake, 5m)    <- extract\n"
        '   odd "name" <x>#                     <- extract\n'
        "level 2\n"
        " * end                                 <- clean\n"
        '   report.v2                           <- clean, odd "name" <x>#\n'
    )


def test_text_without_notes():
    assert render_text({"a": [], "b": ["a"]}) == "level 0\n   a\nlevel 1\n   b  <- a\n"
    assert render_text({}) == ""


def test_mermaid_sanitises_ids_and_keeps_names_as_labels():
    assert render_mermaid(DEPS, NOTES, highlight={"extract", "clean"}) == (
        "flowchart LR\n"
        '  s_extract["extract<br/>databricks, 15m"]\n'
        '  s_clean["clean<br/>snowflake, 5m"]\n'
        '  s_end["end"]\n'
        '  s_odd__name___x__["odd #quot;name#quot; #lt;x#gt;#35;"]\n'
        '  s_report_v2["report.v2"]\n'
        "  s_extract --> s_clean\n"
        "  s_clean --> s_end\n"
        "  s_extract --> s_odd__name___x__\n"
        "  s_clean --> s_report_v2\n"
        "  s_odd__name___x__ --> s_report_v2\n"
        "  classDef critical stroke-width:3px\n"
        "  class s_extract,s_clean critical\n"
    )


def test_mermaid_ids_stay_unique_when_sanitising_collides():
    assert mermaid_ids(["a-b", "a_b", "a.b"]) == {"a-b": "s_a_b", "a_b": "s_a_b_2", "a.b": "s_a_b_3"}


def test_dot_quotes_names_and_labels():
    assert render_dot(DEPS, NOTES, highlight={"extract"}) == (
        "digraph pipeline {\n"
        "  rankdir=LR;\n"
        "  node [shape=box];\n"
        '  "extract" [label="extract\\ndatabricks, 15m", penwidth=3];\n'
        '  "clean" [label="clean\\nsnowflake, 5m"];\n'
        '  "end" [label="end"];\n'
        '  "odd \\"name\\" <x>#" [label="odd \\"name\\" <x>#"];\n'
        '  "report.v2" [label="report.v2"];\n'
        '  "extract" -> "clean";\n'
        '  "clean" -> "end";\n'
        '  "extract" -> "odd \\"name\\" <x>#";\n'
        '  "clean" -> "report.v2";\n'
        '  "odd \\"name\\" <x>#" -> "report.v2";\n'
        "}\n"
    )


def test_renderers_ignore_dependencies_outside_the_graph():
    deps = {"b": ["outside"]}
    assert render_text(deps) == "level 0\n   b\n"
    assert "outside" not in render_mermaid(deps)
    assert "outside" not in render_dot(deps)
