"""Makes the scripted transport in fakes.py importable by the driver tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
