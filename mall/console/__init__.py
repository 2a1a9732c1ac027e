"""The ops console: a static single page under static/admin, served at /admin."""
