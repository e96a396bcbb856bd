import os
import sys

# bench/common.py, and this checkout's qtip_ops before any installed one.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
