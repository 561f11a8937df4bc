"""Procedural synthetic faces with the 98 WFLW landmarks: the offline default dataset."""
