"""Style encoders, registered through the same ``register_encoders`` hook as third-party ones.

Each module here is a plugin (an entry point of the ``nstzoo`` group) and is imported only when
its entry point is loaded, so this package imports nothing on its own: building one encoder never
pulls in the dependencies of another.

- :mod:`.aladin_nst`: ``aladin-nst``, ViT-B/16 + VGG feature moments -> 1024-D (ALADIN-NST).
"""
