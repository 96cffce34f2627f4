"""Where the project is on disk: the folder that holds app.py and core/. Every default folder (runs/,
data/, the cache, the built-in dataset) is named from it by the area that owns it."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
