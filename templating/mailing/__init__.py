"""A template meets its recipients: reading them, taking codes from the store, writing messages.

``check`` and ``preview`` look; ``render`` writes."""
