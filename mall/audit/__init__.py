"""Audit log of every staff write: who, what, when."""
