"""The embedded model: BlazePose GHUM 3D landmarks (bundled in the mediapipe wheel) -> SMPL motion.

``landmarks`` says where BlazePose's 33 landmarks sit on the SMPL skeleton, ``ik`` turns world
landmarks into the 24 SMPL joint rotations (pure numpy/torch geometry, testable without MediaPipe),
``fit`` gives each track its body proportions and camera-frame translation, and ``blazepose`` is
the estimator the pipeline runs (``--model lite``).
"""
