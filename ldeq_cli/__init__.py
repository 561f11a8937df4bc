"""The ``ldeq`` command line."""
