"""Exit codes of the ``fedunet`` command line, one per kind of failure (what scripts and the workflow test)."""

EXIT_CONFIG = 2  # bad configuration or arguments: nothing was started
EXIT_DATA = 3  # a dataset is missing and could not be downloaded
EXIT_RUN = 4  # a run failed (every client diverged, an injected fault)
EXIT_IO = 5  # an output could not be written (disk full, read-only or missing directory)
