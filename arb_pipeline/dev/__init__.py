"""For the demo, the tests and the benchmarks only: local services (PostgreSQL, OpenSSH sshd,
an SMTP catcher, all on 127.0.0.1 and stopped by the PID they started), the one-machine demo,
and the TranSapp workload generator. Production uses the servers' own services instead.
"""
