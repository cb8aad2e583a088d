"""Local stand-ins for the systems SOA Portal talks to: an AD-shaped directory and an Exchange Online emulator.

Used by tests, benchmarks and the demo; the product itself never imports this package.
"""
