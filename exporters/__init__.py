"""Animation exporters: BVH (native) and FBX / .blend / glTF through Blender."""
