import os
import sys

# Tests import the shared fixtures module `gaussians` and the top-level scripts.
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
