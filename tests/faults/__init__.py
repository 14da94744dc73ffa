"""Fault tests: the runtime as an operator and an attacker would meet it."""
