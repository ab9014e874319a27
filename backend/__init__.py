"""HeadRig backend: head model, landmarks, fitting, bundle writing, service and CLI.

Geometry conventions used across the backend: the ICT-FaceKit model is in centimetres, Y up,
+Z out of the face (the face looks down +Z). Camera space follows OpenCV (x right, y down,
z forward); the pose in a fit maps model space to camera space.
"""

__version__ = "0.1.0"
