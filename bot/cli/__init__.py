"""The command line: which ``.env`` is read, the first-run setup, the setup doctor (``check``)."""
