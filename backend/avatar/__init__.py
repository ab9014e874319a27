"""Gaussian head avatar bound to the mesh (SHeaP, GPHM): binding, rendering, training, export, turntable."""
