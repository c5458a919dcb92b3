"""SMPL body model: safe loading, forward kinematics, joint tables."""
