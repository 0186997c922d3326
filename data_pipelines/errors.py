"""The one exception type data_pipelines raises for bad input data.

A ValueError subclass, so callers that only know "bad value" still catch it, while the platform
can tell a broken data set (fix the files) from a bug (fix the code).
"""


class DataError(ValueError):
    """Bad or missing input data; the message names the file or mmad.json key at fault."""
