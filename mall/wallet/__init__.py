"""Stored value: principal and bonus, top-up plans, top-ups through WeChat Pay, ledger."""
