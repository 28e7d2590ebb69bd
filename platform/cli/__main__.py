"""``python -m moeplane.cli`` (how `moeplane up` starts its worker and beat children)."""

from moeplane.cli import main

main()
