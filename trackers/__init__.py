"""Identity tracking of detected people across video frames."""
