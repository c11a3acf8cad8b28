"""A code's life after its message left: redemption at checkout, returns of undelivered codes."""
