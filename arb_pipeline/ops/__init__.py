"""Running the pipeline: retention and the disk guard, parity between the servers,
preflight checks of a server's settings, and alert emails.
"""
