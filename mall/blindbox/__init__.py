"""Blind boxes: series drawn with points, disclosed odds, one Lua call per draw, an audit log."""
