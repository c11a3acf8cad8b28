"""Helpers the tests share: stores, command lines, servers, relays, races."""
