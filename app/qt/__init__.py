"""The only place in the console that imports PySide6 and pyqtgraph."""
