"""Direction names (``--directions`` with names) are shown by `show`, `search`, the HTML and Markdown
reports, and are searchable by keyword."""

from __future__ import annotations

import json
from dataclasses import replace

from builders.search import UNITS, collection_id, record_of, write_units

from explainer.report.render import render_report
from explainer.report.select import select_report
from explainer.runtime import get_store
from explainer.search.hybrid import search
from explainer.search.reindex import check, reindex
from workers.cli import main


def test_direction_names_are_shown_and_searchable(settings, capsys):
    u = UNITS[5]  # "rain, snow and other weather words"
    write_units(settings, [u])
    get_store(settings).finish_collection(collection_id(u), [replace(record_of(u), name="melancholy")], 1000)
    reindex(settings)
    assert check(settings)["in_sync"]

    hits = search(settings, "melancholy")  # the name is in no explanation: only the keyword index has it
    assert [h["unit_id"] for h in hits] == [u.unit_id] and hits[0]["keyword_rank"] == 1
    assert hits[0]["unit_name"] == "melancholy"
    assert main(["search", "melancholy"]) == 0
    assert f'{u.unit_id} "melancholy"' in capsys.readouterr().out
    assert main(["show", u.unit_id]) == 0
    assert capsys.readouterr().out.startswith(f'{u.unit_id} "melancholy"')
    assert main(["show", u.unit_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unit_name"] == "melancholy"

    entries, meta = select_report(settings, unit_ids=[u.unit_id])
    assert "“melancholy”" in render_report(entries, "html", meta, secrets=()).decode()
    assert "“melancholy”" in render_report(entries, "md", meta, secrets=()).decode()
