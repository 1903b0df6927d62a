"""Small helpers every layer shares: units and sizes, files, the C library, mounts.

This package sits below every layer (like ``exception``): it imports nothing
else of the project, and anything may import it.
"""
