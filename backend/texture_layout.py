"""Where each part of the head lives in the bundle's ``texture.png``.

ICT-FaceKit's UVs are UDIM-style: tile k spans u in [k, k+1). The face (tile 0) and the back of
the head (tile 1) are skin and share one atlas image, face on the left half, back head on the
right: atlas_u = u / 2, atlas_v = v (OBJ convention, v up; glTF flips v on write). The other
parts (eyes, teeth, gums, lashes, eye shells) get flat-coloured materials.
"""

ATLAS_TILES = 2
ATLAS_SIZE = (2048, 1024)  # (width, height) in pixels
SKIN_MATERIALS = ("M_Face", "M_BackHead")


def atlas_uv(u, v):
    """Map OBJ uvs of tiles 0 and 1 to atlas uvs in [0, 1]^2 (v up). Works on floats and arrays."""
    return u / ATLAS_TILES, v
