"""sshd and SMTP fixtures (filled in by the services work)."""
