"""mocap: video to 3D body animation."""

__version__ = "0.1.0"
