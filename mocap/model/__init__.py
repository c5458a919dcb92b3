"""The HMR network: ViTPose-H backbone, FeatUp JBU upsamplers, HMR2.0 / deformable heads.

Entry points: ``mocap.model.build`` (variants), ``mocap.model.checkpoint`` (files),
``mocap.model.predictor`` (numpy in, SMPL parameters out), ``mocap.model.crop`` (preprocessing).
Nothing heavy is imported here so that ``mocap --help`` stays instant.
"""
