"""The sender's half of a backup: rows of a window or a whole snapshot read from the app's
database, the media files they reference bundled, and the backup built and published.
"""
