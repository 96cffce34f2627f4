"""`python -m core.evaluate RUN_DIR [--data FOLDER_OR_ZIP]`: the same command as `python -m core evaluate`."""
import sys

from core.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
