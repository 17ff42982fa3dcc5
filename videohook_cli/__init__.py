"""`videohook`: the stack owner's command line for a local or deployed videohook (docs/cli.md)."""
