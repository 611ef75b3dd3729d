"""The console window's smallest size: every view is laid out to be usable at it (main
actions inside the window, no sideways page scroll; tests/app/test_view_sizes.py holds it)."""

MIN_WIDTH, MIN_HEIGHT = 1024, 640
