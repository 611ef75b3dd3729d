"""Live pyqtgraph chart panels."""
