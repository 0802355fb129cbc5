"""The database backends fixtures for every test (tests/database_backends.py)."""

pytest_plugins = ["tests.database_backends"]
