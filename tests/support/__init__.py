"""Test harness shared by integration and end-to-end tests: real databases, real servers
on 127.0.0.1 ephemeral ports, real tokens."""
