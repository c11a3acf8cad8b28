"""The Jinja2 side of promomail: templates, the ``client`` object and renders."""
