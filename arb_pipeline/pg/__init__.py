"""PostgreSQL plumbing shared by both sides: connections with pinned session settings,
schema introspection, identifier quoting and the row hashes parity compares.
"""
