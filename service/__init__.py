"""The HTTP front end of promomail (``promomail serve``): API, tokens, preview page.

As thin as the command line: each route parses its input, calls the same
library functions the command calls, and formats the answer.
"""

from promomail.service.app import ServiceConfig, create_app
from promomail.service.server import serve

__all__ = ["ServiceConfig", "create_app", "serve"]
