"""Seed architectures (mlp, cnn, lstm, lstm_seq) and the facts declared beside each one.

``registry`` maps names (and ``file.py:function`` references) to an ``Architecture``.
"""
