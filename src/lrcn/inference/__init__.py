"""Trained model -> answers: engines that run a checkpoint or an .onnx file (engine, export),
calibration (calibrate), the classify path for clips (predict), and sliding windows over long
videos and streams (windows, timeline, stream)."""
