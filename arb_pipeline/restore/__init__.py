"""Getting data back from backups: point-in-time restore into a new database and the
daily restore drill that proves a complete restores with standard tools.
"""
