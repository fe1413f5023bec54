"""Local services for the demo and the tests: PostgreSQL, OpenSSH sshd, an SMTP catcher.

Everything binds to 127.0.0.1, lives under one base folder, and is stopped by the PID
it started. Production uses the servers' own services instead.
"""
