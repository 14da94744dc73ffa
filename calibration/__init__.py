"""INT8 calibration sets for the frame encoder: frames spread over time and scenes, runtime preprocessing."""
