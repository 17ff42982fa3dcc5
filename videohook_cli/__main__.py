"""`python -m videohook_cli` is the `videohook` command."""

import sys

from videohook_cli.main import main

sys.exit(main())
