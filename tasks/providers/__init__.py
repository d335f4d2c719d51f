"""Providers: one small interface, one module per batch protocol."""
