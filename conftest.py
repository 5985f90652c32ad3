"""Repository-wide pytest set-up (the tests' own fixtures live in tests/conftest.py)."""

pytest_plugins = ["pytester"]
