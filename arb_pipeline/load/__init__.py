"""Writing a verified backup into the receiver's database: staging typed by the receiver,
the versioned merge, and the checks run right after a load.
"""
