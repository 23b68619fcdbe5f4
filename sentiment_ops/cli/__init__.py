"""The ``sentops`` command line: thin commands over the core library."""
