"""Typer commands: each parses options and calls one library function."""
