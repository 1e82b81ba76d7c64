"""lrcn: human action recognition in video with a Long-term Recurrent Convolutional Network."""
__version__ = "0.1.0"
