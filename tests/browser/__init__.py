"""Browser tests (a package, so that this folder's conftest.py is imported as
``browser.conftest`` and leaves the name ``conftest`` to ``tests/conftest.py``,
which test modules elsewhere import by that name)."""
