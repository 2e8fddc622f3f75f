"""`python -m faas_accel` runs the CLI."""

from .cli import main

main()
