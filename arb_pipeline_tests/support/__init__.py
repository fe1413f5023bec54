"""What the tests share, so no test module imports another: fixtures (postgres, services, demo:
loaded as pytest plugins by conftest.py) and helpers for backups, traffic, the receiver, alerts.
"""
