"""Members (WeChat login, profile) and staff accounts."""
