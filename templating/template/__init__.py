"""The template itself: the sandboxed environment, its limits, static analysis, the client object.

Pure Jinja2: nothing here opens the store or a file of recipients."""
