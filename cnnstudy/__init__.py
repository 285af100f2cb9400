"""cnnstudy: which CNN design choice wins? Padding and downsampling, with evidence."""

__version__ = "0.1.0"
