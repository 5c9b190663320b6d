from tests.support.docs import BLOCKS, README, render


def test_readme_tables_match_the_code():
    text = README.read_text()
    for name in BLOCKS:
        assert f"<!-- {name}:start -->" in text, f"README lacks the {name} table"
    assert render(text) == text, "README tables are stale: run `python -m tests.support.docs`"
