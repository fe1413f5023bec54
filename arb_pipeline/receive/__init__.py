"""The receiver's handling of one backup from the inbox: find it, verify it, install its
media, load it, and quarantine it (with its reason) when the backup itself is at fault.
"""
