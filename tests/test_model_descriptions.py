"""Tortoise's SQLite migration editor splits SQL on ";", and table and column
descriptions become SQL comments: a ";" in a model docstring's first paragraph or a
field description breaks `mall migrate` on SQLite (the zero-setup default)."""

from __future__ import annotations

from tortoise import Tortoise


async def test_no_semicolons_in_model_descriptions() -> None:
    bad = []
    for name, model in Tortoise.apps["models"].items():
        if ";" in (model._meta.table_description or ""):
            bad.append(name)
        for field_name, field in model._meta.fields_map.items():
            if field.description and ";" in field.description:
                bad.append(f"{name}.{field_name}")
    assert not bad, f"replace ';' in these descriptions: {bad}"
